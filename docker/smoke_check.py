"""End-to-end checks of a running compose stack (called by docker/smoke.sh; runs on the host's venv).

1. wait until the balancer and both replicas answer ready; 2. classify a real recording with every task the stack has;
3. upload a task package (built for the stack's own backbone) on ONE replica; 4. classify with it through
the balancer until both replicas have answered (the shared Redis store carries it to the other one), and
directly on the other replica; 5. delete it through the balancer. Prints one line per step; exit 1 on failure.

usage: python docker/smoke_check.py LB_URL REPLICA1_URL REPLICA2_URL [AUDIO]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from clients import NotFound, RetryPolicy, SpeechPromptClient, SpeechPromptError


def wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with SpeechPromptClient(url, timeout=5) as c:
        while time.monotonic() < deadline:
            try:
                r = c.ready()
                if r.ready:
                    return
                last = f"{r.status} {r.body}"
            except SpeechPromptError as e:
                last = str(e)
            time.sleep(2)
    raise SystemExit(f"FAIL: {url} not ready after {timeout_s:.0f} s: {last}")


def main(lb: str, rep1: str, rep2: str, audio: Path) -> None:
    token = os.environ.get("SPEECHPROMPT_ADMIN_TOKEN")
    t0 = time.monotonic()
    for name, url in (("balancer", lb), ("replica 1", rep1), ("replica 2", rep2)):
        wait_ready(url, float(os.environ.get("SMOKE_READY_TIMEOUT_S", "600")))
        print(f"ok   {name} ready after {time.monotonic() - t0:.1f} s")
    retry = RetryPolicy(max_retries=5, max_delay_s=10)
    with SpeechPromptClient(lb, token=token, retry=retry) as c, SpeechPromptClient(rep1, token=token) as r1, \
            SpeechPromptClient(rep2, token=token, retry=retry) as r2:
        bb = c.backbone()
        print(f"ok   backbone {bb.kind} {bb.name} {bb.fingerprint[:16]}")
        for t in c.tasks():
            res = c.classify(t.name, audio)
            print(f"ok   {audio.name} via balancer, task {t.name}@{res.version}: {res.label} ({res.score:.3f}), "
                  f"{res.audio.duration_s:.2f} s audio @ {res.audio.input_sample_rate} Hz, "
                  f"{res.timings.total_ms:.0f} ms")

        import torch  # host venv only (the client needs neither)

        from speechprompt.package import NUM_SPECIAL, PackageMeta, write_package

        lm = bb.raw["unit_lm"]
        L, d, V, plen = lm["layers"], lm["embed_dim"], lm["vocab_size"], 4
        g = torch.Generator().manual_seed(0)
        labels = ("front", "back", "left")
        meta = PackageMeta(task="smoke-task", labels=labels, backbone_fingerprint=bb.fingerprint,
                           backbone_kind=bb.kind or "gslm", prompt_length=plen, created="2024-01-01T00:00:00+00:00")
        data = write_package(meta, deep_key=torch.randn(L, plen, d, generator=g) * 0.02,
                             deep_value=torch.randn(L, plen, d, generator=g) * 0.02,
                             input_prompt=torch.zeros(plen, d), separator=torch.randn(d, generator=g) * 0.02,
                             verbalizer=torch.randn(len(labels) + NUM_SPECIAL, V, generator=g) * 0.02)
        up = r1.upload("smoke-task", data)
        print(f"ok   uploaded smoke-task@{up.version} on replica 1 ({rep1})")

        deadline = time.monotonic() + 30
        while True:  # the other replica sees it once it polls the shared store
            try:
                direct = r2.classify("smoke-task", audio)
                break
            except NotFound:
                if time.monotonic() > deadline:
                    raise SystemExit("FAIL: replica 2 never saw the task uploaded on replica 1") from None
                time.sleep(1)
        assert direct.version == up.version, (direct.version, up.version)
        print(f"ok   replica 2 ({rep2}) serves smoke-task@{direct.version}: {direct.label}")
        answers = [c.classify("smoke-task", audio) for _ in range(8)]
        assert {(a.version, a.label) for a in answers} == {(up.version, direct.label)}, answers
        print(f"ok   8 classifications through the balancer agree: {direct.label} "
              f"({', '.join(f'{a.timings.total_ms:.0f}' for a in answers)} ms)")
        assert c.delete("smoke-task").deleted
        print("ok   deleted smoke-task through the balancer")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3],
         Path(sys.argv[4] if len(sys.argv) > 4 else "/usr/share/sounds/alsa/Front_Center.wav"))
