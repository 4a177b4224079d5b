"""scripts/data_scaling.py and training/markers.py: the data-scaling table is built from the runs' numbers."""


import pytest

from speechprompt.training.markers import replace_block
from tests.scripts import load_script


def _module():
    return load_script("data_scaling")


def _run(train: int, v2: float, hist: float) -> dict:
    def cell(a):
        return {"test": {"accuracy": a}, "test_engine": {"accuracy": a - 0.2}}

    return {"sizes": {"train": train, "dev": train // 4, "test": 4 * train // 10, "test_engine": train // 4},
            "v2": {**cell(v2), "seconds": 60.0, "epochs": 30, "best_epoch": 20, "steps": 240,
                   **({"max_epochs": 120} if train > 1000 else {})},
            "verbalizer_only": cell(v2 - 0.1), "logreg_hist": cell(hist), "logreg_feats": cell(hist + 0.05)}


def test_rows_are_ordered_by_train_clips_and_check_the_target():
    mod = _module()
    text = mod.render([_run(2000, 0.9, 0.8), _run(250, 0.6, 0.7)], "commands-en", 0.85, "meta")
    lines = text.splitlines()
    head = lines.index("#### commands-en, test: unseen voices and accents")
    # 250 clips first (its run predates --max-epochs: the recipe's cap 60); v2 0.6 on 100 test clips: s.e. sqrt(0.24 / 100) = 0.049; probes missing -> dashes
    assert lines[head + 4] == "| 250 | 60 | 100 | 0.600 ± 0.049 | 0.500 | 0.700 | 0.750 | – | – | -0.100 | no |"
    assert lines[head + 5] == "| 2000 | 120 | 800 | 0.900 ± 0.011 | 0.800 | 0.800 | 0.850 | – | – | +0.100 | yes |"
    engine = lines.index("#### commands-en, test: unseen engine (flite)")
    # 0.7 on flite is below the target although it beats the histogram
    assert lines[engine + 5].endswith("| 0.600 | 0.650 | – | – | +0.100 | no |")
    assert "| 2000 | 120 | 500 | 60.0 | 30 (20) | 240 |" in lines


def test_replace_block_keeps_the_rest_of_the_file(tmp_path):
    doc = tmp_path / "r.md"
    doc.write_text("# T\n\nbefore\n<!-- a -->\nold\n<!-- b -->\nafter\n")
    replace_block(doc, "<!-- a -->", "<!-- b -->", "new 1\nnew 2\n")
    assert doc.read_text() == "# T\n\nbefore\n<!-- a -->\nnew 1\nnew 2\n<!-- b -->\nafter\n"
    # markers replaced too (model cards: the block carries its own markers)
    replace_block(doc, "<!-- a -->", "<!-- b -->", "<!-- a -->X<!-- b -->", keep_markers=False)
    assert doc.read_text() == "# T\n\nbefore\n<!-- a -->X<!-- b -->\nafter\n"
    with pytest.raises(ValueError, match="no marker '<!-- c -->'"):
        replace_block(doc, "<!-- c -->", "<!-- b -->", "x", create=False)
    replace_block(doc, "<!-- c -->", "<!-- d -->", "x\n")
    assert doc.read_text().endswith("after\n\n<!-- c -->\nx\n<!-- d -->\n")
