"""The swap of held-out speakers into training (scripts/real_voices_swap.py) and the draws table
(scripts/real_draws.py): folds by voice, manifests that never test a voice the model trained on, pooled cells."""

from __future__ import annotations

import csv
import json
import os

import pytest

from speechprompt.training.manifest import Example
from tests.scripts import load_script


@pytest.fixture(scope="module")
def swap():
    return load_script("real_voices_swap")


def corpus():
    """Rows and examples of a toy language-id task: 2 train voices, 5 test voices (3 `es`, 2 `fr`), 4 clips each."""
    rows, examples = {}, []
    voices = [("tr-es", "es", "train"), ("tr-fr", "fr", "train")] + [
        (f"te-es{i}", "es", "test") for i in range(3)] + [(f"te-fr{i}", "fr", "test") for i in range(2)]
    for v, lang, side in voices:
        for k in range(4):
            path = f"/c/{v}/{k}.wav"
            rows[path] = {"path": f"{v}/{k}.wav", "speaker": v, "language": lang}
            examples.append(Example(path, lang, side if side == "test" or k else "dev"))
    return rows, examples


def test_folds_deal_every_test_voice_once_and_each_label_across_folds(swap):
    rows, examples = corpus()
    voice = {e.path: swap.voice_of(rows[e.path]) for e in examples}
    folds = swap.deal_folds(examples, voice, 2, seed=0)
    assert sorted(folds) == ["te-es0", "te-es1", "te-es2", "te-fr0", "te-fr1"]  # train voices are never dealt
    for lang in ("es", "fr"):
        assert {f for v, f in folds.items() if lang in v} == {0, 1}  # both folds test both languages
    assert folds == swap.deal_folds(examples, voice, 2, seed=0)
    assert swap.voice_of({"path": "music/song_03.wav", "source": "hedgewars", "kind": "nonspeech"}) == "hedgewars:song"


def test_swap_manifest_tests_one_fold_and_trains_on_the_other_test_voices(swap, tmp_path):
    rows, examples = corpus()
    folds = swap.deal_folds(examples, {e.path: swap.voice_of(rows[e.path]) for e in examples}, 2, seed=0)
    seen_tested = set()
    for fold in (0, 1):
        n = swap.swap_manifest(examples, rows, folds, fold, tmp_path / f"f{fold}")
        with open(tmp_path / f"f{fold}" / "manifest.csv") as fh:
            got = list(csv.DictReader(fh))
        by_voice: dict[str, set] = {}
        for r in got:
            by_voice.setdefault(r["path"].split("/")[2], set()).add(r["split"])
        tested = {v for v, s in by_voice.items() if "test" in s}
        assert tested == {v for v, f in folds.items() if f == fold}
        assert all(s == {"test"} for v, s in by_voice.items() if v in tested)  # a tested voice never trains
        assert all("test" not in s for v, s in by_voice.items() if v not in tested)
        assert by_voice["tr-es"] == {"train", "dev"} and sum(n.values()) == len(examples)
        seen_tested |= tested
    assert seen_tested == set(folds)  # pooled over the folds, every test voice is tested once
    swap.swap_manifest(examples, rows, folds, None, tmp_path / "all")
    with open(tmp_path / "all" / "manifest.csv") as fh:
        assert {r["split"] for r in csv.DictReader(fh)} <= {"train", "dev"}
    # a work folder copied with hard links (cp -al) keeps its own manifest when the original is rewritten
    (tmp_path / "copy").mkdir()
    os.link(tmp_path / "f0" / "manifest.csv", tmp_path / "copy" / "manifest.csv")
    before = (tmp_path / "copy" / "manifest.csv").read_bytes()
    swap.swap_manifest(examples, rows, folds, 1, tmp_path / "f0")
    assert (tmp_path / "f0" / "manifest.csv").read_bytes() == (tmp_path / "f1" / "manifest.csv").read_bytes() != before
    assert (tmp_path / "copy" / "manifest.csv").read_bytes() == before


def test_pooled_cell_weights_folds_by_their_clips_and_draws_show_the_spread(swap):
    folds = [{"new": {"v2": {"test": {"accuracy": 0.5, "n": 10}}}}, {"new": {"v2": {"test": {"accuracy": 0.8, "n": 30}}}}]
    assert swap.pooled(folds, ("new", "v2")) == {"accuracy": pytest.approx(0.725), "n": 40}
    assert swap.pooled(folds + [{"new": {}}], ("new", "v2")) is None  # a fold without the cell: no pooled number
    draws = load_script("real_draws")
    assert draws.spread([0.4, 0.5, 0.45]) == "0.450 (0.400-0.500)" and draws.spread([0.4]) == "0.400"
    runs = [{"vad": {"new": {"v2": {"test": {"accuracy": a}}, "logreg_hist": {"test": {"accuracy": h}}},
                     "logreg_mfcc": {"test": {"accuracy": 0.9}}}} for a, h in ((0.95, 0.93), (0.91, 0.94))]
    row = next(line for line in draws.render(runs, {"ab" * 8}).splitlines() if line.startswith("| vad"))
    assert "| 2 | 0.930 (0.910-0.950) | - | 0.935 (0.930-0.940) | 0.900 (0.900-0.900) | - | +0.020 / -0.030 |" in row
    runs[0]["vad"]["old"] = {"v2": {"test": {"accuracy": 0.99}}}  # the old default's prompts: shown, not a regression
    row = next(line for line in draws.render(runs, {"ab" * 8}).splitlines() if line.startswith("| vad"))
    assert "| 2 | 0.930 (0.910-0.950) | 0.990 [1 of 2 draws] | 0.935 (0.930-0.940) | 0.900 (0.900-0.900) | - | +0.020 / -0.030 |" in row


def test_best_draw_picks_the_best_dev_accuracy_and_the_first_on_a_tie(swap):
    runs = [{"v2": {"dev": {"accuracy": a}, "test": {"accuracy": t}}} for a, t in ((0.960, 0.99), (0.962, 0.5),
                                                                                     (0.962, 0.9))]
    assert swap.best_draw(runs) == 1  # dev decides, never test; the earlier of two equal draws
    assert swap.best_draw(runs[:1]) == 0


def test_best_draw_ranks_by_class_balanced_dev_accuracy_when_dev_metrics_are_there(swap):
    """A dev split of 8 speech and 2 noise clips: the draw that gets one noise clip and every speech clip (plain 0.90,
    balanced 0.75) beats one that calls everything speech (plain 0.80, balanced 0.5) and one that gets both noise
    clips and half the speech (plain 0.60, balanced 0.75) on plain accuracy; equal on both, the first wins."""
    def run(noise_right, speech_right):
        per = {"noise": {"recall": noise_right / 2, "support": 2}, "speech": {"recall": speech_right / 8, "support": 8},
               "unused": {"recall": 0.0, "support": 0}}  # a class without dev clips does not count
        acc = (noise_right + speech_right) / 10
        return {"v2": {"dev": {"accuracy": acc}, "dev_metrics": {"per_class": per}}}

    everything_speech, one_noise, both_noise = run(0, 8), run(1, 8), run(2, 4)
    assert swap.balanced(one_noise["v2"]["dev_metrics"]) == pytest.approx(0.75)
    assert swap.best_draw([everything_speech, one_noise]) == 1  # plain accuracy alone would rank these 0.80 < 0.90 too
    assert swap.best_draw([everything_speech, both_noise]) == 1  # balanced 0.75 > 0.5, though plain 0.60 < 0.80
    assert swap.best_draw([both_noise, one_noise]) == 1  # balanced tie (0.75 each): plain accuracy decides
    assert swap.best_draw([one_noise, run(1, 8)]) == 0  # equal on both: the first
    with pytest.raises(ValueError, match="empty"):
        swap.balanced({"per_class": {"noise": {"recall": 0.0, "support": 0}}})


def test_dev_pick_takes_the_read_out_with_the_better_dev_accuracy_then_the_lower_dev_loss():
    draws = load_script("real_draws")

    def v(dev_acc, dev_loss, test):
        return {"dev": {"accuracy": dev_acc, "loss": dev_loss}, "test": {"accuracy": test}}

    assert draws.dev_pick({"v2": v(0.6, 1.0, 0.9), "v2_mean": v(0.7, 2.0, 0.1)}) == "v2_mean"  # dev decides, not test
    assert draws.dev_pick({"v2": v(0.627, 1.32, 0.65), "v2_mean": v(0.627, 1.30, 0.50)}) == "v2_mean"  # tie: loss
    assert draws.dev_pick({"v2": v(0.5, 1.0, 0.4), "v2_mean": v(0.5, 1.0, 0.3)}) == "v2"  # all equal: the separator
    assert draws.dev_pick({"v2": v(0.5, 1.0, 0.4)}) == "v2" and draws.dev_pick({"classes": 2}) is None
    no_loss = {"dev": {"accuracy": 0.5}, "test": {"accuracy": 0.9}}
    assert draws.dev_pick({"v2": no_loss, "v2_mean": v(0.5, 3.0, 0.1)}) == "v2_mean"  # no loss loses a tie
    runs = [{"digits": {"new": {"v2": v(0.6, 1.0, 0.45), "v2_mean": v(0.7, 1.0, 0.55),
                                "logreg_hist": {"test": {"accuracy": 0.5}}}}},
            {"digits": {"new": {"v2": v(0.8, 1.0, 0.70), "v2_mean": v(0.7, 1.0, 0.20),
                                "logreg_hist": {"test": {"accuracy": 0.6}}}}}]
    before = json.dumps(runs, sort_keys=True)
    block = draws.render(runs, {"ab" * 8, "cd" * 8}, readout="dev-pick")
    row = next(line for line in block.splitlines() if line.startswith("| digits"))
    assert "| 2 | 0.625 (0.550-0.700) | - | 0.550 (0.500-0.600) |" in row and row.endswith("| +0.050 / +0.100 |")
    assert "2 builds" in block and "the read-out the dev split picks" in block
    assert json.dumps(runs, sort_keys=True) == before  # the caller's results are not rewritten
    sep = next(line for line in draws.render(runs, {"ab" * 8}).splitlines() if line.startswith("| digits"))
    assert "| 2 | 0.575 (0.450-0.700) |" in sep  # the default reads the separator (v2) as before


def test_only_named_backbones_join_the_rows_of_a_pooled_table():
    """A work folder copied from another backbone keeps that backbone's cells of the tasks it did not rerun."""
    draws = load_script("real_draws")

    def run(fp, acc):
        return {"new": {"fingerprint": fp, "v2": {"dev": {"accuracy": 0.5}, "test": {"accuracy": acc}}},
                "logreg_mfcc": {"test": {"accuracy": 0.4}}}

    runs = [{"digits": run("aa11", 0.5), "keyword": run("cc33", 0.9)}, {"digits": run("bb22", 0.7)}]
    assert draws.fingerprints_by_task(runs) == {"digits": {"aa11", "bb22"}, "keyword": {"cc33"}}
    kept = draws.only_backbones(runs, ["aa", "bb"])
    assert draws.fingerprints_by_task(kept) == {"digits": {"aa11", "bb22"}}
    assert "new" in runs[0]["keyword"]  # the caller's results are not rewritten
    block = draws.render(kept, {"aa11", "bb22"})
    assert not any(line.startswith("| keyword") for line in block.splitlines())
    assert "| digits | 2 | 0.600 (0.500-0.700) |" in block and block.rstrip().endswith("| +0.100 / +0.300 |")
    with pytest.raises(ValueError, match="dev-pick"):
        draws.render(kept, {"aa11"}, readout="best-on-test")


def test_real_draws_writes_the_draws_block_only_for_the_default_backbone(tmp_path):
    """A trial backbone's draws once overwrote the default's block in results.md: now they are printed and the script
    exits with an error, leaving the file alone; the default's own draws are written (a real process each time)."""
    import subprocess
    import sys

    from tests.scripts import ROOT

    default = json.loads((ROOT / "models" / "default" / "backbone.json").read_text())["fingerprint"]
    doc = tmp_path / "results.md"
    before = "intro\n<!-- draws:begin -->\nold block\n<!-- draws:end -->\nrest\n"
    doc.write_text(before)

    def draws(fingerprint: str) -> subprocess.CompletedProcess:
        work = tmp_path / fingerprint[:8]
        work.mkdir(exist_ok=True)
        cells = {"v2": {"test": {"accuracy": 0.75}}, "logreg_hist": {"test": {"accuracy": 0.5}}, "fingerprint": fingerprint}
        (work / "results.json").write_text(json.dumps({"vad": {"new": cells}}))
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "real_draws.py"), str(work), "--results", str(doc)],
                              capture_output=True, text=True)

    trial = draws("f3ad179c" + "0" * 56)
    assert trial.returncode == 1 and "| vad | 1 | 0.750" in trial.stdout
    assert "not written" in trial.stderr and "f3ad179c" in trial.stderr and doc.read_text() == before
    ours = draws(default)
    assert ours.returncode == 0, ours.stderr
    assert "old block" not in doc.read_text() and "| vad | 1 | 0.750" in doc.read_text()


def test_a_demo_is_its_best_draw_or_every_draw_as_one_ensemble(swap, tmp_path):
    import torch

    from speechprompt.package import PackageMeta, new_package, read_package

    files = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        meta = PackageMeta(task="vad", labels=("noise", "speech"), backbone_fingerprint="ef" * 32,
                           training={"seed": seed})
        pkg = new_package(meta, torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g),
                          torch.randn(5, 8, generator=g), torch.randn(8, generator=g), torch.randn(6, 12, generator=g))
        files.append(tmp_path / f"seed{seed}.safetensors")
        files[-1].write_bytes(pkg.data)
    best = swap.demo_package(files, 1, as_ensemble=False)
    assert best.data == files[1].read_bytes()
    joined = swap.demo_package(files, 1, as_ensemble=True)
    assert joined.meta.members == 3 and joined.meta.task == "vad"
    assert [torch.equal(m.separator, read_package(f.read_bytes()).separator)
            for m, f in zip(joined.members, files, strict=True)] == [True] * 3
    assert swap.demo_package(files[:1], 0, as_ensemble=True).data == files[0].read_bytes()  # one draw: itself
