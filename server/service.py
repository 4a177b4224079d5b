"""The serving process's parts and their lifecycle: store, runtime, model loop, registry, store watcher.

``start`` returns at once and boots in the background (the runtime loads in a worker thread), so
``/healthz`` answers while ``/readyz`` says 503 and why until everything is up. No FastAPI here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import memory
from .admission import Admission
from .batcher import Batcher
from .errors import NotReady
from .metrics import Metrics
from .registry import Registry
from .settings import Settings
from .speech_trims import load_vad
from .stores import PromptStore, open_store
from .units_cache import UnitsCache

log = logging.getLogger(__name__)

RuntimeFactory = Callable[[Settings], Any]


def lm_audio_limit_s(runtime: Any) -> float | None:
    """Longest clip (s) whose units always fit the unit LM's positions: a row is ``[</s>, units, <s>]`` (with a voice
    prefix its ``S`` tokens lead the units) and a clip of N samples gives at most ``(N - window) // hop + 1`` units.
    None when the runtime has no limit."""
    try:
        spec = runtime.backbone.spec
        max_units = int(spec.unit_lm.max_positions) - 2 - (spec.voice.length if getattr(spec, "voice", None) else 0)
        hop, rate = int(runtime.backbone.encoder.hop_size), int(spec.sample_rate)
    except (AttributeError, TypeError, ValueError):
        return None
    window = 400 * rate // 16000  # HuBERT's receptive field: 25 ms
    return ((max_units - 2) * hop + window) / rate  # one frame of margin for resampling rounding


def load_runtime(settings: Settings) -> Any:
    """Default runtime factory: the backbone bundle named by the settings (blocking). A folder without a
    bundle is a BundleError that names the setting to change."""
    from speechprompt.backbone import BundleError
    from speechprompt.runtime import Runtime

    if not (Path(settings.bundle_dir) / "backbone.json").is_file():
        raise BundleError(f"no backbone bundle (backbone.json) in {settings.bundle_dir}: set "
                          "SPEECHPROMPT_BUNDLE_DIR (or `speechprompt serve --bundle DIR`) to a bundle folder")
    choice = choose_precision(settings)
    runtime = Runtime.load(settings.bundle_dir, device=settings.device, precision=choice.mode)
    runtime.backbone.precision = {**runtime.backbone.precision, **choice.info()}
    log.info("precision %s (requested %s): %s", choice.mode, choice.requested, choice.reason)
    return runtime


def choose_precision(settings: Settings):
    """The precision mode for ``settings`` (``auto`` resolved from the CPU flags and the bundle's recorded
    agreement gate); raises ``PrecisionError`` for int8 on CUDA."""

    from speechprompt import precision

    fingerprint, digest = precision.bundle_ids(settings.bundle_dir)  # ("", None): Runtime.load reports the broken bundle
    return precision.choose(settings.precision, device=settings.device, flags=precision.cpu_flags(),
                            gate=precision.read_gate(settings.bundle_dir), fingerprint=fingerprint,
                            settings_digest=digest)


def _threadsafe_setter(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    """A callback any thread may call to set ``event`` on ``loop`` (ignored once the loop is closed)."""

    def notify() -> None:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:
            pass

    return notify


class Service:
    """Holds the runtime and everything built on it; ``state`` is starting | ready | failed | stopped."""

    def __init__(self, settings: Settings, runtime_factory: RuntimeFactory | None = None):
        self.settings = settings
        self.runtime_factory = runtime_factory or load_runtime
        self.metrics = Metrics()
        self.state = "starting"
        self.reason = "starting"  # public words (never a path or a host): /readyz and 503 bodies
        self.failure: str | None = None  # the start-up error in full: logs and the admin status only
        self.runtime: Any = None
        self.speech_vad: Any = None  # Silero VAD for tasks that name a speech trim (server/speech_trims.py)
        self.max_audio_seconds = settings.max_audio_seconds  # lowered at boot to what the unit LM can take
        self.store: PromptStore | None = None
        self.batcher: Batcher | None = None
        self.registry: Registry | None = None
        # every admitted request fits the queue, so the batcher never refuses one it has decoded
        self._trimmed_after = 0
        self.admission = Admission(settings.queue_capacity, settings.request_deadline_s,
                                   lambda: self.batcher.job_seconds if self.batcher is not None else 0.05)
        self._boot_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self.ready_event: asyncio.Event | None = None

    async def start(self) -> None:
        self.ready_event = asyncio.Event()
        self._boot_task = asyncio.create_task(self._boot(), name="sp-boot")

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the boot to end; raises NotReady if it failed."""
        assert self.ready_event is not None, "start() first"
        await asyncio.wait_for(self.ready_event.wait(), timeout)
        if self.state != "ready":
            raise NotReady(self.reason)

    async def _boot(self) -> None:
        s = self.settings
        try:
            self.store = open_store(s.store, keep_versions=s.store_keep_versions)
            self.reason = "loading the backbone bundle"
            runtime = await asyncio.to_thread(self.runtime_factory, s)
            lm_limit = lm_audio_limit_s(runtime)
            if lm_limit is not None and lm_limit < s.max_audio_seconds:
                log.warning("max_audio_seconds lowered from %g to %.2f s: longer clips exceed the unit LM's "
                            "positions", s.max_audio_seconds, lm_limit)
                self.max_audio_seconds = lm_limit
            self.reason = "loading the speech-trim weights"
            self.speech_vad = await asyncio.to_thread(load_vad, s.speech_trim_weights)
            cache = self.store.units_cache(UnitsCache(s.units_cache_entries))
            self.batcher = Batcher(runtime, cache, runtime.units_key, max_rows=s.max_batch_rows,
                                   max_wait_s=s.max_batch_wait_ms / 1e3, capacity=s.queue_capacity,
                                   metrics=self.metrics)
            self.batcher.start()
            self.registry = Registry(runtime, self.store, self.batcher, budget_bytes=s.prompt_bank_budget_bytes,
                                     max_package_bytes=s.max_upload_bytes, max_prompt_length=s.max_prompt_length,
                                     max_classes=s.max_classes, metrics=self.metrics)
            self.reason = f"loading task packages from the {self.store.kind()} store"
            await self.registry.refresh()
            self.runtime = runtime
            self.state, self.reason = "ready", "ready"
            changed = asyncio.Event()
            self.store.on_change(_threadsafe_setter(asyncio.get_running_loop(), changed))
            self._watch_task = asyncio.create_task(self._watch(changed), name="sp-store-watch")
            log.info("ready: backbone %s, %d tasks", runtime.fingerprint[:16], len(self.registry.names()))
        except Exception as exc:  # noqa: BLE001 - reported by /readyz
            log.exception("start-up failed")
            self.failure = f"{type(exc).__name__}: {exc}"
            self.state, self.reason = "failed", (f"start-up failed ({type(exc).__name__}) while {self.reason}; "
                                                 "see the server log")
        finally:
            assert self.ready_event is not None
            self.ready_event.set()

    async def _watch(self, changed: asyncio.Event) -> None:
        """Re-read the store every poll interval, or at once when it signals a change, so packages dropped
        or replaced there become servable without a restart."""
        while True:
            try:
                await asyncio.wait_for(changed.wait(), self.settings.store_poll_interval_s)
            except TimeoutError:
                pass
            changed.clear()
            await self._trim_if_idle()
            try:
                assert self.registry is not None
                await self.registry.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep polling; the store may come back
                log.exception("store poll failed")

    async def _trim_if_idle(self) -> None:
        """After a burst, once no request is in flight, give freed heap memory back to the OS (once per
        burst): RSS returns near its pre-burst value instead of staying at the peak."""
        admission = self.admission
        if admission.inflight or admission.admitted == self._trimmed_after:
            return
        self._trimmed_after = admission.admitted
        await asyncio.to_thread(memory.trim)

    async def stop(self) -> None:
        for task in (self._watch_task, self._boot_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.stop)
        if self.store is not None:
            self.store.close()
        self.state, self.reason = "stopped", "shutting down"

    def require_ready(self) -> None:
        """Raise NotReady (503, with the reason) unless the service is ready."""
        if self.state != "ready":
            raise NotReady(f"the server is not ready: {self.reason}")
