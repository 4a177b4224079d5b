"""The teacher-ceiling classifiers of scripts/real_ceiling.py: the time-keeping ones read word order that pooling
loses, choices are made on dev, and the results block is built from the draws' cells."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from tests.scripts import load_script


@pytest.fixture(scope="module")
def ceiling():
    return load_script("real_ceiling")


def ordered_task(n: int, seed: int) -> list[tuple[torch.Tensor, str]]:
    """Clips whose label is only in the frame order: 'up' rises then falls back, 'down' the reverse; both have the
    same frames, so the same mean and s.d. (4-d, 6-10 frames, a little noise)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = 6 + i % 5
        ramp = torch.linspace(-1, 1, t)[:, None] * torch.tensor([1.0, -0.5, 0.3, 0.8])
        label = "up" if i % 2 else "down"
        f = ramp if label == "up" else ramp.flip(0)
        out.append((f + 0.05 * torch.randn(f.shape, generator=g), label))
    return out


def toy_data() -> dict:
    return {"train": ordered_task(40, 0), "dev": ordered_task(16, 1), "test": ordered_task(20, 2)}


def test_pooling_is_blind_to_order_and_the_fixed_window_is_not(ceiling):
    f = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    assert np.allclose(ceiling.mean_sd(f), [2.0, 3.0, np.sqrt(8 / 3), np.sqrt(8 / 3)])
    assert np.allclose(ceiling.mean_sd(f), ceiling.mean_sd(f.flip(0)))  # order is gone
    x = ceiling.fixed_length(f, n=5)
    assert x.shape == (10,)
    assert np.allclose(x.reshape(5, 2), [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])  # linear in time, ends kept
    assert not np.allclose(x, ceiling.fixed_length(f.flip(0), n=5))
    data = toy_data()
    pooled = ceiling.lr_on_dev(data, ceiling.mean_sd)
    windowed = ceiling.lr_on_dev(data, ceiling.fixed_length)
    assert windowed["test"] == 1.0
    assert pooled["test"] <= 0.75  # the same frames in another order: near chance (0.5)


def test_the_regression_reports_the_c_picked_on_dev_not_on_test(ceiling):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data = toy_data()
    r = ceiling.lr_on_dev(data, ceiling.mean_sd)
    X = {s: np.stack([ceiling.mean_sd(f) for f, _ in v]) for s, v in data.items()}
    y = {s: np.array([lab for _, lab in v]) for s, v in data.items()}
    sc = StandardScaler().fit(X["train"])
    per_c = []
    for c in (0.01, 0.1, 1.0, 10.0):
        m = LogisticRegression(C=c, max_iter=3000).fit(sc.transform(X["train"]), y["train"])
        per_c.append([c] + [float((m.predict(sc.transform(X[s])) == y[s]).mean()) for s in ("dev", "test")])
    picked = max(per_c, key=lambda row: row[1])  # first best on dev
    assert [r["C"], r["dev"], r["test"]] == picked


def test_dtw_is_zero_for_a_time_stretched_copy_and_its_1nn_reads_order(ceiling):
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    stretched = a.repeat_interleave(torch.tensor([2, 1, 3]), dim=0)
    assert ceiling.dtw_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert ceiling.dtw_distance(a, stretched) == pytest.approx(0.0, abs=1e-6)
    assert ceiling.dtw_distance(a, a.flip(0)) > 0.3
    assert ceiling.dtw_1nn(toy_data()) == {"test": 1.0}


def test_bigru_learns_order_and_reports_the_dev_picked_epoch(ceiling):
    torch.set_num_threads(1)
    r = ceiling.bigru(toy_data(), seed=0, epochs=40, hidden=8)
    assert set(r) == {"dev", "test", "epoch"} and 0 < r["epoch"] < 40  # learnt, not the first epoch
    assert r["dev"] >= 0.9 and r["test"] >= 0.9
    assert r == ceiling.bigru(toy_data(), seed=0, epochs=40, hidden=8)  # the seed fixes the run
    flipped = toy_data()
    flipped["dev"] = [(f, "up" if lab == "down" else "down") for f, lab in flipped["test"]]  # test's clips, wrong labels
    r = ceiling.bigru(flipped, seed=0, epochs=40, hidden=8)
    assert r["dev"] == pytest.approx(1 - r["test"])  # the epoch dev likes best is the one worst on test
    assert r["test"] < 0.9  # picked on test it would be >= 0.9, as above


def test_block_shows_means_over_draws_beside_the_table(ceiling, tmp_path):
    md = tmp_path / "results.md"
    md.write_text("x\n<!-- draws:begin -->\n| task | draws | new | old | hist | mfcc | se | gap |\n|---|\n"
                  "| keyword | 3 | 0.267 (0.244-0.289) | 0.267 | 0.178 | 0.200 | 0.393 (0.378-0.400) | -0.1 |\n"
                  "<!-- draws:end -->\n")
    cells = ceiling.table_cells(md)
    assert cells == {"keyword": {"prompts": "0.267", "se": "0.393"}}
    draws = [{"keyword": {"mean_sd_lr": {"test": 0.3}, "fixed_lr": {"test": 0.5}, "bigru": {"test": 0.4},
                          "dtw_1nn": {"test": 0.35}}},
             {"keyword": {"mean_sd_lr": {"test": 0.4}, "fixed_lr": {"test": 0.4}, "bigru": {"test": 0.2},
                          "dtw_1nn": {"test": 0.35}}}]
    text = ceiling.render(draws, cells, {"date": "2026-12-05"})
    row = next(line for line in text.splitlines() if line.startswith("| keyword"))
    assert row == ("| keyword | 0.90 | 0.393 | 0.350 (0.300-0.400) | 0.450 (0.400-0.500) | 0.300 (0.200-0.400) | "
                   "0.350 (0.350-0.350) | 0.267 | 0.450 |")
    assert "over 2 training draws" in text and "| vad" not in text and text.endswith("|\n")
    del draws[1]["keyword"]["bigru"]
    assert "| 0.400 [1 of 2 draws] |" in ceiling.render(draws, cells, {"date": "2026-12-05"})


def test_the_draws_table_of_results_md_is_read(ceiling):
    from tests.scripts import ROOT

    cells = ceiling.table_cells(ROOT / "docs" / "results.md")
    assert sorted(cells) == sorted(ceiling.TASKS)
    assert all(0 < float(c["prompts"]) < 1 and 0 < float(c["se"]) < 1 for c in cells.values())


def test_save_merges_tasks_of_one_draw(ceiling, tmp_path):
    out = tmp_path / "ceiling.json"
    ceiling.save(out, "keyword", {"key": "a", "bigru": {"test": 0.4}})
    ceiling.save(out, "vad", {"key": "b"})
    ceiling.save(out, "keyword", {"key": "c"})
    assert json.loads(out.read_text()) == {"keyword": {"key": "c"}, "vad": {"key": "b"}}


def test_a_work_folder_without_manifests_exits_2_before_loading_a_bundle(ceiling, tmp_path, monkeypatch, capsys):
    def no_load(*a, **k):
        raise AssertionError("a bundle was loaded")

    monkeypatch.setattr(ceiling.Backbone, "load", no_load)
    monkeypatch.setattr(sys, "argv", ["real_ceiling.py", "--work", str(tmp_path), "--tasks", "keyword"])
    with pytest.raises(SystemExit) as e:
        ceiling.main()
    assert e.value.code == 2
    assert "run scripts/real_speech_eval.py there first" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["real_ceiling.py", "--work", str(tmp_path), "--tasks", "gender"])
    with pytest.raises(SystemExit) as e:
        ceiling.main()
    assert e.value.code == 2
