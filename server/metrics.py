"""Prometheus metrics, one naming pattern: ``sp_<what>_<unit>`` (``_total`` for counters).

One :class:`Metrics` per app, on its own ``CollectorRegistry`` (two apps in one process never clash).
Queue time and compute time are separate histograms; the same timings go back to the client in the
classify response (``timings``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_MS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the server exports. Task labels are bounded: unknown task names count as ``_unknown``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sp_requests_total", "classify requests by task and HTTP status", ["task", "status"], registry=r
        )
        self.failures = Counter(
            "sp_request_failures_total", "failed requests by error code", ["code"], registry=r
        )
        self.decode_seconds = Histogram(
            "sp_request_decode_duration_seconds", "audio decode + resample time", buckets=_MS_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "sp_request_queue_duration_seconds", "time a job waited for the model loop",
            buckets=_MS_BUCKETS, registry=r,
        )
        self.compute_seconds = Histogram(
            "sp_request_inference_duration_seconds", "encoder + unit LM time of the job's batch",
            buckets=_MS_BUCKETS, registry=r,
        )
        self.speech_trim_seconds = Histogram(
            "sp_speech_trim_duration_seconds", "Silero VAD time of a clip whose tasks name a speech trim",
            buckets=_MS_BUCKETS, registry=r,
        )
        self.request_seconds = Histogram(
            "sp_request_duration_seconds", "total time from request to answer", buckets=_MS_BUCKETS, registry=r
        )
        self.batch_rows = Histogram("sp_batch_rows", "unit LM rows per batch", buckets=_ROW_BUCKETS, registry=r)
        self.batch_jobs = Histogram("sp_batch_jobs", "clips per batch", buckets=_ROW_BUCKETS, registry=r)
        self.queue_depth = Gauge("sp_queue_depth", "jobs waiting for the model loop", registry=r)
        self.dropped_jobs = Counter(
            "sp_dropped_jobs_total", "jobs skipped because their client went away", registry=r
        )
        self.expired_jobs = Counter(
            "sp_expired_jobs_total", "jobs skipped because their deadline passed in the queue", registry=r
        )
        self.cache_hits = Counter("sp_units_cache_hits_total", "units cache hits", registry=r)
        self.cache_misses = Counter("sp_units_cache_misses_total", "units cache misses", registry=r)
        self.resident_tasks = Gauge("sp_resident_tasks", "task versions resident in the prompt bank", registry=r)
        self.resident_bytes = Gauge("sp_prompt_bank_bytes", "bytes of resident task prompts", registry=r)
        self.package_load_seconds = Histogram(
            "sp_package_load_duration_seconds", "validate + load of a task package onto the device",
            buckets=_MS_BUCKETS, registry=r,
        )
        self.package_evict_seconds = Histogram(
            "sp_package_evict_duration_seconds", "removal of a task version from the device",
            buckets=_MS_BUCKETS, registry=r,
        )
        self.http_in_progress = Gauge(
            "sp_http_requests_in_progress",
            "HTTP requests whose headers are in and whose answer is not yet sent (this scrape included)", registry=r,
        )
        self.stream_sessions = Gauge("sp_stream_sessions", "WebSocket streams open (/v1/stream)", registry=r)
        self.windows = Counter(
            "sp_windows_total", "windows scored, of long clips (classify) and of streams", ["source"], registry=r
        )
        self.package_failures = Counter(
            "sp_package_failures_total", "refused or failed task packages by error code", ["code"], registry=r
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class InProgress:
    """ASGI middleware: ``gauge`` counts the HTTP requests the app is handling, from complete headers to the
    last byte of the answer (a request still uploading its body counts). A drain on SIGTERM waits for these;
    WebSocket streams count in ``sp_stream_sessions`` instead."""

    def __init__(self, app, gauge: Gauge) -> None:
        self.app = app
        self.gauge = gauge

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.gauge.track_inprogress():
            await self.app(scope, receive, send)
