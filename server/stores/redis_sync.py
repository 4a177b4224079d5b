"""How a Redis store replica keeps its view in line with Redis: one sync thread (SUBSCRIBE, read the whole
state, apply events), resyncs after gaps and reconnects, and the restore of a Redis that came back EMPTY.

Recovery rule for an empty Redis (no ``epoch``: restarted without persistence, or flushed): a replica that
knew a store writes back its last known state (same epoch and seq, every current package from its local
copy) with ONE atomic script that does nothing when a store already exists, so the first replica to notice
restores and the others find their own state again. Writes wait for that restore (``RedisStore.put``), so no
upload can start a new store that makes every replica forget the tasks it serves.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import redis

log = logging.getLogger(__name__)


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisSync:
    """The state half of ``RedisStore`` (its attributes are set by ``RedisStore.__init__``)."""

    client: Any
    where: str
    prefix: str
    channel: str

    # -- state ---------------------------------------------------------------------------------------
    def _apply_write(self, epoch: str | None, seq: int, task: str, version: str | None) -> None:
        """Our own put/delete: apply it now (read-your-writes); when it is not the next seq (events are still
        on their way, or a new epoch) also re-read the whole state."""
        with self._lock:
            if seq <= self._seq and epoch == self._epoch:
                return  # an event already brought this (or a newer) state
            self._set(task, version)
            contiguous = epoch == self._epoch and seq == self._seq + 1
            if contiguous:
                self._seq = seq
        if not contiguous:
            try:
                self._resync()
            except redis.RedisError:
                self._resync_wanted.set()  # the sync thread will do it
        self._changed()

    def _set(self, task: str, version: str | None) -> None:
        if version is None:
            self._map.pop(task, None)
        else:
            self._map[task] = version

    def _read_state(self) -> tuple[str | None, int, dict[str, str]]:
        """Epoch, seq and every task's current version, read in one transaction."""
        with self.client.pipeline(transaction=True) as p:
            p.get(self.key("epoch")).get(self.key("seq")).hgetall(self.key("tasks"))
            epoch, seq, tasks = p.execute()
        return _s(epoch), int(seq or 0), {_s(t): _s(v) for t, v in tasks.items()}

    def _resync(self) -> None:
        """Read the whole state and adopt it (newer only); restore a Redis that lost the store we knew."""
        epoch, seq, tasks = self._read_state()
        if epoch is None:
            with self._lock:
                knew = self._epoch is not None or bool(self._map)
            if knew and self.restore(partial=False):
                epoch, seq, tasks = self._read_state()
        with self._lock:
            if epoch is None and self._epoch is not None and self._map:
                changed, self._lost = not self._lost, True
            elif epoch is not None and epoch == self._epoch and seq < self._seq:
                changed = False  # an older read than what our own write already applied
            else:
                changed = (epoch, seq, tasks) != (self._epoch, self._seq, self._map) or self._lost
                if epoch != self._epoch and self._epoch is not None:
                    log.warning("redis %s holds another prompt store (epoch %s, was %s): adopting it",
                                self.where, epoch, self._epoch)
                self._epoch, self._seq, self._map, self._lost = epoch, seq, tasks, False
        self._first_attempt.set()  # the state is Redis's now (set before callbacks that may read it)
        if changed:
            self._changed()

    def restore(self, *, partial: bool = True) -> bool:
        """Write this replica's last known state (epoch, seq, current packages from the local copy) into a
        Redis that holds no store; a no-op when one exists (another replica restored first). With
        ``partial=False`` nothing is written unless every current package is in the local copy (a replica
        that never read some package leaves the restore to one that did). True if it ran. Raises RedisError.
        """
        with self._lock:
            epoch, seq, tasks = self._epoch or uuid.uuid4().hex, self._seq, dict(self._map)
        args: list[Any] = []
        missing = []
        for task, version in sorted(tasks.items()):
            data = self.local.read(task, version)
            if data is None:
                missing.append(task)
            else:
                args += [task, version, data]
        if missing:
            log.error("cannot restore tasks %s into redis %s: their packages are not in the local copy %s",
                      missing, self.where, self.local.dir)
            if not partial:
                return False
        _, restored = self._restore(keys=[self.key("tasks"), self.key("seq"), self.key("epoch")],
                                    args=[epoch, seq, self.prefix, self.channel, *args])
        if int(restored):
            log.warning("redis %s held no prompt store: restored the %d tasks this replica knew (epoch %s, seq %d)",
                        self.where, len(args) // 3, epoch, seq)
        return True

    def _on_event(self, data: bytes) -> None:
        try:
            ev = json.loads(data)
            if ev.get("restored"):
                self._resync()
                return
            task, version, seq, epoch = ev["task"], ev.get("version"), int(ev["seq"]), ev.get("epoch")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("malformed event on %s: %r", self.channel, data[:200])
            self._resync()
            return
        with self._lock:
            if epoch == self._epoch and seq <= self._seq:
                return  # already applied (our own write)
            contiguous = epoch == self._epoch and seq == self._seq + 1 and not self._lost
            if contiguous:
                self._set(task, version)
                self._seq = seq
        if contiguous:
            self._changed()
        else:
            self._resync()  # a gap: some message was missed, or a new epoch

    def _changed(self) -> None:
        with self.local.lock:  # the state saved is the newest: no older save can land after a newer one
            with self._lock:
                epoch, seq, tasks, callbacks = self._epoch, self._seq, dict(self._map), list(self._callbacks)
            self.local.save(epoch, seq, tasks)
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a listener's failure must not stop the sync thread
                log.exception("store change callback failed")

    # -- sync thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        self._backoff = 0.05
        while not self._stop.is_set():
            pubsub = self.client.pubsub()
            try:
                self._listen(pubsub)
            except (redis.RedisError, OSError, ValueError) as exc:
                self._set_connected(False, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the sync thread: log, reconnect
                log.exception("redis store sync failed")
                self._set_connected(False, f"{type(exc).__name__}: {exc}")
            finally:
                self._first_attempt.set()
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
            if self._stop.wait(self._backoff):
                break
            self._backoff = min(self._backoff * 2, 1.0)  # reconnect soon, then at most once a second

    def _listen(self, pubsub: Any) -> None:
        """Subscribe, resync, then apply events until the connection fails (raises) or the store closes."""
        pubsub.subscribe(self.channel)
        deadline = time.monotonic() + self.timeout_s
        while (msg := pubsub.get_message(timeout=0.05)) is None or msg["type"] != "subscribe":
            if time.monotonic() > deadline:
                raise redis.TimeoutError("no subscribe confirmation")
        self._resync()  # after SUBSCRIBE: no change can fall between the read and the first event
        self.connects += 1
        self._backoff = 0.05
        self._set_connected(True, "")
        heard = pinged = time.monotonic()
        next_resync = heard + self.resync_s
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=0.1)
            now = time.monotonic()
            if msg is not None:
                heard = now
                if msg["type"] == "message":
                    self._on_event(msg["data"])
                elif msg["type"] == "subscribe":  # redis-py reconnected and resubscribed by itself
                    self.connects += 1
                    self._resync()
            if pinged > heard and now - pinged > self.timeout_s:
                raise redis.ConnectionError(f"subscription silent for {now - heard:.1f} s (no PONG)")
            if now - heard >= self.health_check_s and pinged <= heard:
                pubsub.ping("sp-health")
                pinged = now
            if now >= next_resync or self._resync_wanted.is_set():
                self._resync_wanted.clear()
                self._resync()
                next_resync = now + self.resync_s

    def _set_connected(self, up: bool, reason: str) -> None:
        with self._lock:
            was, self._connected = self._connected, up
            self._down_reason = reason or self._down_reason
        self._first_attempt.set()
        if was != up:
            (log.info if up else log.warning)("redis store %s %s", self.where,
                                               "connected" if up else f"unreachable: {reason}")
            self._changed()
