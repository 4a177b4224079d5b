"""Progress written to a file or a pipe is plain periodic lines; a terminal still gets a tqdm bar."""

from __future__ import annotations

import io
import os

from speechprompt.training.progress import LineProgress, progress


def test_progress_to_a_file_is_plain_lines_not_one_growing_line():
    out = io.StringIO()
    with progress(total=1000, desc="units", unit="clip", file=out, interval_s=0.0) as bar:
        for _ in range(1000):
            bar.update(1)
            bar.set_postfix({"loss": "0.5"}, refresh=False)
    text = out.getvalue()
    assert isinstance(bar, LineProgress) and "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 1001 and lines[-1].startswith("units: 1000/1000 clip") and "loss=0.5" in lines[-1]


def test_plain_lines_are_periodic_and_iterables_advance():
    out = io.StringIO()
    assert list(progress(range(50), desc="augment", unit="clip", file=out)) == list(range(50))
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]  # 10 s interval: only the final line
    assert out.getvalue().startswith("augment: 50/50 clip")


def test_a_terminal_still_gets_a_tqdm_bar():
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = progress(total=3, desc="train", file=tty)
        assert type(bar).__name__ == "tqdm"
        bar.close()
    os.close(master)


def test_set_description_relabels_the_next_lines():
    out = io.StringIO()
    bar = progress(total=4, desc="train t", unit="step", file=out, interval_s=0.0)
    bar.update(1)
    bar.set_description("train t (mean read-out)")
    bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("train t: 1/4 step") and lines[1].startswith("train t (mean read-out): 2/4 step")


def test_refresh_prints_the_state_now_even_inside_the_interval():
    """A run shorter than the interval still gets its line when the next one starts (``train --readout auto``)."""
    out = io.StringIO()
    bar = progress(total=9, desc="train t (separator read-out)", unit="step", file=out, interval_s=3600.0)
    bar.update(3)
    assert out.getvalue() == ""  # inside the interval: nothing yet
    bar.set_postfix({"dev_acc": "0.900"})
    bar.refresh()
    bar.set_description("train t (mean read-out)")
    bar.update(2)
    bar.close()
    bar.refresh()  # after close: nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train t (separator read-out): 3/9 step")
    assert lines[0].endswith("dev_acc=0.900") and lines[1].startswith("train t (mean read-out): 5/9 step")
