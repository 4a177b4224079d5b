"""After a burst of classify requests, a REAL server process gives its memory back: RSS within 25 % of the
pre-burst value soon after it goes idle (bench/memory_after_burst.py measures the same on any server)."""

from __future__ import annotations

import importlib.util

import pytest

from .helpers import make_package
from .live import ADMIN, ROOT, LiveServer

pytestmark = pytest.mark.slow


def bench():
    spec = importlib.util.spec_from_file_location("memory_after_burst", ROOT / "bench/memory_after_burst.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rss_returns_within_25_percent_of_pre_burst_after_idle(tmp_path):
    with LiveServer(tmp_path / "mem", SPEECHPROMPT_STORE_POLL_INTERVAL_S="1",
                    SPEECHPROMPT_MAX_AUDIO_SECONDS="30") as srv:
        pkg = make_package("mem-task", 1, **srv.dims())
        assert srv.http.put("/v1/tasks/mem-task", content=pkg.data, headers=ADMIN).status_code == 201
        fig = bench().measure(srv.url, srv.proc.pid, "mem-task", concurrency=96, seconds=8.0, idle_s=20.0)
    print(fig)
    assert fig["statuses"].get(200, 0) + fig["statuses"].get(429, 0) == 96, fig
    assert fig["peak_mb"] > fig["before_mb"], fig  # the burst did hold memory
    assert fig["back_within_target_after_s"] is not None, fig
