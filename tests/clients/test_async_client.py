"""AsyncSpeechPromptClient: same results and errors as the sync client, concurrent requests, retries."""

from __future__ import annotations

import asyncio

import pytest

from clients import AsyncSpeechPromptClient, NotFound, RetryPolicy, TooManyRequests, Unprocessable

from .conftest import LABELS, same_scores, wav_bytes


def test_async_matches_sync(live, client, test_task, recording):
    sync = client.classify(test_task, recording)

    async def main():
        async with AsyncSpeechPromptClient(live.url, token=live.token) as c:
            r = await c.classify(test_task, recording)
            multi = await c.classify_multi(f"{test_task},no-such-task", recording.read_bytes(), top_k=2)
            tasks = await c.tasks()
            one = await c.task(test_task)
            bb = await c.backbone()
            ready = await c.ready()
            return r, multi, tasks, one, bb, ready

    r, multi, tasks, one, bb, ready = asyncio.run(main())
    assert (r.label, r.version, r.audio) == (sync.label, sync.version, sync.audio)
    assert same_scores(r.scores, sync.scores) and same_scores(multi.ok[test_task].scores, sync.scores[:2])
    assert isinstance(multi.failed["no-such-task"].error, NotFound)
    assert test_task in {t.name for t in tasks} and one.labels == tuple(LABELS)
    assert bb.fingerprint == client.backbone().fingerprint and ready.ready


def test_async_concurrent_and_errors(live, client, test_task):
    clips = [wav_bytes(0.3 + 0.05 * i, freq=200.0 + 50 * i) for i in range(8)]
    expected = [client.classify(test_task, c).scores for c in clips]

    async def main():
        async with AsyncSpeechPromptClient(live.url) as c:
            got = await asyncio.gather(*(c.classify(test_task, x) for x in clips))
            errs = await asyncio.gather(c.classify(test_task, wav_bytes(0.0)), c.task("no-such-task"),
                                        return_exceptions=True)
            return got, errs

    got, errs = asyncio.run(main())
    assert all(same_scores(g.scores, e) for g, e in zip(got, expected))
    assert isinstance(errs[0], Unprocessable) and errs[0].status == 422
    assert isinstance(errs[1], NotFound) and errs[1].status == 404


def test_async_upload_delete(live, make_package):
    if not live.token:
        pytest.skip("needs the admin token")
    data = make_package("clienttest-async", ["x", "y"], seed=3)

    async def main():
        async with AsyncSpeechPromptClient(live.url, token=live.token) as c:
            up = await c.upload("clienttest-async", data)
            gone = await c.delete("clienttest-async")
            return up, gone

    up, gone = asyncio.run(main())
    assert up.task == "clienttest-async" and len(up.version) == 16 and gone.deleted


def test_async_retry(live, faults, test_task):
    path = f"/v1/tasks/{test_task}/classify"
    body = {"type": "/problems/queue_full", "title": "Too many requests", "status": 429, "detail": "full"}
    faults.inject(path, 429, count=2, headers={"Retry-After": "4"}, body=body)
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)

    async def main(retries: int):
        async with AsyncSpeechPromptClient(live.url, retry=RetryPolicy(max_retries=retries), sleep=fake_sleep) as c:
            return await c.classify(test_task, wav_bytes())

    assert asyncio.run(main(2)).task == test_task
    assert waits == [4.0, 4.0] and faults.requests(path) == 3
    faults.inject(path, 429, count=2, headers={"Retry-After": "4"}, body=body)
    with pytest.raises(TooManyRequests) as ei:
        asyncio.run(main(1))
    assert ei.value.retry_after == 4.0 and ei.value.detail == "full"
