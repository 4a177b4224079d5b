"""Python client (sync + asyncio) and CLI commands for the SpeechPrompt server's HTTP API (v1).

Talks HTTP only; imports nothing from ``server`` or ``speechprompt``. See ``docs/client.md``.
"""

from .client import (
    DEFAULT_URL,
    AsyncSpeechPromptClient,
    AudioInput,
    RetryPolicy,
    SpeechPromptClient,
    sniff_content_type,
)
from .errors import (
    BadGateway,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ResponseFormatError,
    ServerError,
    ServiceUnavailable,
    SpeechPromptError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from .models import (
    AudioInfo,
    BackboneInfo,
    ClassifyResult,
    DeleteResult,
    MultiClassifyResult,
    Readiness,
    Score,
    TaskFailure,
    TaskInfo,
    Timings,
    UploadResult,
)
from .stream import StreamError, StreamResult, StreamSummary, TaskSummary, WindowScores, astream, stream

__all__ = [
    "DEFAULT_URL", "AsyncSpeechPromptClient", "AudioInput", "RetryPolicy", "SpeechPromptClient",
    "sniff_content_type",
    "BadGateway", "BadRequest", "Conflict", "Forbidden", "GatewayTimeout", "NotFound", "PayloadTooLarge",
    "ProblemError", "ResponseFormatError", "ServerError", "ServiceUnavailable", "SpeechPromptError",
    "TooManyRequests", "TransportError", "Unauthorized", "Unprocessable", "UnsupportedMediaType",
    "AudioInfo", "BackboneInfo", "ClassifyResult", "DeleteResult", "MultiClassifyResult", "Readiness", "Score",
    "TaskFailure", "TaskInfo", "Timings", "UploadResult",
    "StreamError", "StreamResult", "StreamSummary", "TaskSummary", "WindowScores", "astream", "stream",
]
