"""The model loop with a fake runtime: cross-task batching, limits, deadlines, dropped clients, cache."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from server.batcher import Batcher
from server.errors import DeadlineExceeded, NotReady, QueueFull
from server.metrics import Metrics
from server.units_cache import UnitsCache, pcm_digest

from .fakes import FakeRuntime, fake_probs, fake_units, make_package

pytestmark = pytest.mark.asyncio


def clip(seed: int, n: int = 4000) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.05).astype(np.float32)


@pytest.fixture
def rt():
    rt = FakeRuntime()
    rt.add_task("a@1", make_package("a", seed=1))
    rt.add_task("b@1", make_package("b", labels=("x", "y"), seed=2))
    rt.calls.clear()
    rt.threads.clear()
    yield rt
    rt.gate.set()


@pytest.fixture
def make_batcher():
    made = []

    def factory(runtime, *, max_rows=64, max_wait_s=0.002, capacity=64, cache=64):
        b = Batcher(runtime, UnitsCache(cache), runtime.fingerprint, max_rows=max_rows, max_wait_s=max_wait_s,
                    capacity=capacity, metrics=Metrics())
        b.start()
        made.append(b)
        return b

    yield factory
    for b in made:
        b.stop()


def submit(b: Batcher, wav: np.ndarray, keys, deadline_s: float = 10.0, on_finish=None):
    return b.submit(wav, pcm_digest(wav), keys, time.monotonic() + deadline_s, on_finish)


async def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.002)


async def hold_model_thread(b: Batcher, rt: FakeRuntime):
    """Occupy the model thread inside classify (gate closed) so the next jobs queue up."""
    rt.gate.clear()
    fut = submit(b, clip(999), ["a@1"])
    await wait_for(lambda: rt.rows() == [1])
    return fut


async def test_rows_of_many_jobs_and_tasks_share_one_forward(rt, make_batcher):
    b = make_batcher(rt)
    first = await hold_model_thread(b, rt)
    jobs = [(clip(i), ["a@1", "b@1"] if i % 2 else ["b@1"]) for i in range(6)]
    futs = [submit(b, w, keys) for w, keys in jobs]
    rt.gate.set()
    results = await asyncio.gather(first, *futs)
    assert rt.rows() == [1, sum(len(k) for _, k in jobs)]  # ONE forward for all 9 rows of 6 clips, 2 tasks
    assert [n for what, n in rt.calls if what == "encode"] == [1, 6]  # encoder batched over the 6 clips
    for (wav, keys), res in zip(jobs, results[1:], strict=True):
        assert len(res.rows) == len(keys) and res.batch_rows == 9 and res.batch_jobs == 6
        for key, probs in zip(keys, res.rows, strict=True):  # same as one-by-one
            np.testing.assert_allclose(probs, fake_probs(rt.tasks[key], fake_units(wav).units), rtol=1e-6)
        assert res.units.frames == (len(wav) - 400) // 320 + 1
    assert rt.threads == {"sp-model-loop"}


async def test_max_rows_bounds_a_batch(rt, make_batcher):
    b = make_batcher(rt, max_rows=4)
    first = await hold_model_thread(b, rt)
    futs = [submit(b, clip(i), ["a@1"]) for i in range(6)] + [submit(b, clip(9), ["a@1", "b@1", "a@1"])]
    rt.gate.set()
    await asyncio.gather(first, *futs)
    assert rt.rows() == [1, 4, 2, 3]  # FIFO: 4 rows, then 2 (the 3-row job would overflow), then 3


async def test_full_queue_is_a_typed_429_with_retry_after(rt, make_batcher):
    b = make_batcher(rt, capacity=2)
    first = await hold_model_thread(b, rt)
    queued = [submit(b, clip(i), ["a@1"]) for i in range(2)]
    with pytest.raises(QueueFull) as err:
        submit(b, clip(5), ["a@1"])
    assert int(err.value.headers["Retry-After"]) >= 1
    rt.gate.set()
    await asyncio.gather(first, *queued)
    await submit(b, clip(5), ["a@1"])  # room again


async def test_deadline_passed_in_queue_gives_504_and_no_model_work(rt, make_batcher):
    b = make_batcher(rt)
    first = await hold_model_thread(b, rt)
    finished = []
    late = submit(b, clip(1), ["b@1"], deadline_s=0.01, on_finish=lambda: finished.append(1))
    await asyncio.sleep(0.05)
    rt.gate.set()
    await first
    with pytest.raises(DeadlineExceeded):
        await late
    await wait_for(lambda: finished == [1])
    assert b.expired == 1 and rt.rows() == [1]


async def test_cancelled_clients_are_skipped_and_counted(rt, make_batcher):
    b = make_batcher(rt)
    first = await hold_model_thread(b, rt)
    released = []
    gone = submit(b, clip(1), ["a@1"], on_finish=lambda: released.append("gone"))
    kept = submit(b, clip(2), ["b@1"], on_finish=lambda: released.append("kept"))
    gone.cancel()
    rt.gate.set()
    await asyncio.gather(first, kept)
    await wait_for(lambda: len(released) == 2)
    assert b.dropped == 1 and rt.rows() == [1, 1]  # the dropped job's row never reached the LM
    assert sorted(released) == ["gone", "kept"]  # leases are released either way
    assert b.metrics.dropped_jobs._value.get() == 1


async def test_units_cache_hit_skips_the_encoder(rt, make_batcher):
    b = make_batcher(rt)
    wav = clip(3)
    r1 = await submit(b, wav, ["a@1"])
    r2 = await submit(b, wav.copy(), ["b@1"])
    assert (r1.cache_hit, r2.cache_hit) == (False, True)
    assert r2.encode_ms == 0.0 and [n for what, n in rt.calls if what == "encode"] == [1]
    assert np.array_equal(r1.units.units, r2.units.units)


async def test_a_failing_row_fails_alone(rt, make_batcher):
    b = make_batcher(rt)
    first = await hold_model_thread(b, rt)
    bad = submit(b, clip(1), ["gone@1", "a@1"])
    good = submit(b, clip(2), ["b@1"])
    rt.gate.set()
    await first
    res_bad, res_good = await bad, await good
    assert isinstance(res_bad.rows[0], KeyError)
    np.testing.assert_allclose(res_bad.rows[1], fake_probs(rt.tasks["a@1"], fake_units(clip(1)).units), rtol=1e-6)
    np.testing.assert_allclose(res_good.rows[0], fake_probs(rt.tasks["b@1"], fake_units(clip(2)).units), rtol=1e-6)


async def test_control_calls_run_on_the_model_thread_in_order(rt, make_batcher):
    b = make_batcher(rt)
    seen = []
    futs = [b.call(lambda i=i: seen.append((i, threading.current_thread().name)) or i) for i in range(3)]
    assert [await asyncio.wrap_future(f) for f in futs] == [0, 1, 2]
    assert seen == [(i, "sp-model-loop") for i in range(3)]


async def test_stopped_loop_refuses_work(rt, make_batcher):
    b = make_batcher(rt)
    fut = submit(b, clip(1), ["a@1"])
    b.stop()
    assert (await fut).rows  # queued work finishes before the thread ends
    with pytest.raises(NotReady):
        submit(b, clip(2), ["a@1"])
    with pytest.raises(NotReady):
        b.call(lambda: None).result()


async def test_an_ensemble_task_counts_a_row_per_member_against_max_rows(make_batcher):
    """A key of a 3-member ensemble costs the unit LM 3 rows (the prompt bank runs one per member): batches and the
    forwards of a job larger than a batch are cut by those rows, not by request rows."""

    class EnsembleRuntime(FakeRuntime):
        def rows_of(self, key: str) -> int:
            return 3 if key.startswith("e@") else 1

    rt = EnsembleRuntime()
    rt.add_task("e@1", make_package("e", seed=3))
    rt.add_task("a@1", make_package("a", seed=1))
    rt.calls.clear()
    b = make_batcher(rt, max_rows=6)
    first = await hold_model_thread(b, rt)
    futs = [submit(b, clip(i), ["e@1"]) for i in range(3)] + [submit(b, clip(7), ["a@1"] * 6)]
    rt.gate.set()
    await asyncio.gather(first, *futs)
    assert rt.rows() == [1, 2, 1, 6]  # 2 x 3 unit-LM rows, then the third (a 6-row plain job would overflow), then 6
    big = await submit(b, clip(8), ["e@1", "a@1", "e@1", "e@1"])  # 10 unit-LM rows: forwards of 3 + 1, then 3 + 3
    assert len(big.rows) == 4 and rt.rows()[-2:] == [2, 2]


def test_forwards_cut_rows_by_their_unit_lm_rows():
    from server.batcher import forwards

    assert forwards([1] * 5, 2) == [(0, 2), (2, 4), (4, 5)]  # plain rows: as before, max_rows each
    assert forwards([3, 1, 3, 3], 6) == [(0, 2), (2, 4)]
    assert forwards([8, 1], 6) == [(0, 1), (1, 2)]  # a row heavier than the limit: a forward of its own
    assert forwards([], 4) == []
