"""Service configuration: ONE pydantic-settings class, built in the app factory (never at import).

Every field can be set from the environment with the prefix ``SPEECHPROMPT_`` (e.g.
``SPEECHPROMPT_ADMIN_TOKEN=...``, ``SPEECHPROMPT_MAX_BATCH_ROWS=64``). Model facts (layers, dims, sample
rate) are not here: they come from the backbone bundle's ``backbone.json``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from speechprompt.paths import default_path
from speechprompt.precision import parse_mode


class Settings(BaseSettings):
    """What the operator chooses for one server process."""

    model_config = SettingsConfigDict(env_prefix="SPEECHPROMPT_", extra="forbid")

    bundle_dir: Path = Field(default_factory=lambda: default_path("models/default"),
                             description="backbone bundle folder (backbone.json + weights); default models/default "
                             "in the current folder, else in the installation")
    store: str = Field(
        default_factory=lambda: str(default_path("prompts_store")),
        description="task prompt package store: a folder path, or a redis://host:port/db URL; default "
        "prompts_store in the current folder, else in the installation",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for PUT/DELETE /v1/tasks; unset -> uploads and deletes are refused (403)"
    )
    speech_trim_weights: Path = Field(
        default_factory=lambda: default_path("models/speech_trim/silero_vad_v6.safetensors"),
        description="Silero VAD v6 weights (safetensors) for tasks whose package names a speech trim; default "
        "models/speech_trim/silero_vad_v6.safetensors in the current folder, else in the installation. A missing "
        "file: those tasks answer 503 speech_trim_unavailable; a file that is not those weights fails start-up")
    device: str = Field("cpu", description="torch device for the backbone and the prompt bank")
    precision: str = Field(
        "auto", description="arithmetic of the encoder and unit LM: auto (the fastest mode this CPU/GPU runs "
        "natively whose agreement gate, recorded with the bundle in precision_gate.json, passed; else fp32), fp32, "
        "bf16, int8, or ENCODER/UNIT_LM such as fp32/bf16 (docs/benchmarks.md, speechprompt/precision.py)"
    )
    max_batch_rows: int = Field(32, ge=1, description="most unit-LM rows (one per clip x task) in one forward")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="how long the model loop waits to fill a batch (ms)")
    queue_capacity: int = Field(256, ge=1, description="classify requests in flight (reading, decoding, queued, "
                                "computing) before 429; refused before the body is read")
    request_deadline_s: float = Field(30.0, gt=0, description="per-request budget from arrival to answer (s)")
    max_audio_seconds: float = Field(30.0, gt=0, description="longest clip accepted (s, after decoding)")
    max_long_audio_seconds: float = Field(
        600.0, gt=0, description="longest clip accepted when a task's long-audio policy is truncate or window, "
        "and the longest audio one stream session may send (s)")
    long_audio_policy: str = Field(
        "reject", pattern="^(reject|truncate|window)$", description="what a task does with a clip over "
        "max_audio_seconds when neither its package metadata (long_audio.policy) nor the request says: reject "
        "(413), truncate (score the first max_audio_seconds) or window (score every window, then aggregate)")
    window_seconds: float = Field(2.0, gt=0, description="default window length for windowed classify and "
                                  "streams when the package metadata and the request do not say (s)")
    hop_seconds: float = Field(1.0, gt=0, description="default hop between window starts (s)")
    stream_buffer_seconds: float = Field(
        30.0, gt=0, description="audio a stream may send ahead of its last scored window before the server closes "
        "it with 1013 (the bounded buffer; s)")
    header_timeout_s: float = Field(10.0, gt=0, description="a connection whose request line and headers are not "
                                    "complete this long after it opened (or after its last answer) is closed (s)")
    body_timeout_s: float = Field(20.0, gt=0, description="a request body not received in full this long after "
                                  "its headers is refused with 408 and its connection closed (s)")
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="largest request body (audio or package)")
    units_cache_entries: int = Field(1024, ge=0, description="LRU entries of clip -> units (0 disables)")
    prompt_bank_budget_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="device bytes for resident task prompts (LRU eviction above it)"
    )
    store_keep_versions: int = Field(
        3, ge=1, description="stored package versions kept per task (older ones are pruned; served ones are kept)"
    )
    max_prompt_length: int = Field(
        128, ge=1, description="longest deep prompt (positions) a task package may have; longer uploads get 422"
    )
    max_classes: int = Field(256, ge=2, description="most classes (labels) a task package may have")
    store_poll_interval_s: float = Field(2.0, gt=0, description="how often the store is checked for changes (s)")
    drain_timeout_s: float = Field(
        20.0, ge=0, description="on SIGTERM the server stops accepting connections, lets the requests in flight "
        "(body upload, queue, model) finish for up to this long, then stops (s); Kubernetes' "
        "terminationGracePeriodSeconds must exceed the preStop delay plus this")
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8000, ge=0, le=65535, description="listen port")

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, v: str) -> str:
        if v != "auto":
            parse_mode(v)  # PrecisionError is a ValueError: a settings error naming the accepted values
        return v
