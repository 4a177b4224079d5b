"""Metrics against hand-computed values on fixed fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from speechprompt.training.evaluate import (
    EvaluationError,
    accuracy_by_group,
    compute_metrics,
    confusion_matrix,
    equal_error_rate,
    plot_confusion,
    plot_verbalizer,
)

# 3 classes, 8 clips.  true: a a a b b c c c ; pred: a b a b c c c a
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
Y_PRED = [0, 1, 0, 1, 2, 2, 2, 0]


def test_confusion_and_report_by_hand():
    m = compute_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(5 / 8)
    # a: P 2/3 R 2/3 F1 2/3 ; b: P 1/2 R 1/2 F1 1/2 ; c: P 2/3 R 2/3 F1 2/3
    pc = m["per_class"]
    assert pc["a"]["precision"] == pytest.approx(2 / 3) and pc["a"]["recall"] == pytest.approx(2 / 3)
    assert pc["b"]["f1"] == pytest.approx(0.5)
    assert pc["c"]["support"] == 3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)
    assert "eer" not in m  # not binary


def test_class_never_predicted_has_zero_precision_not_nan():
    m = compute_metrics([0, 1, 1], [1, 1, 1], ["x", "y"])
    assert m["per_class"]["x"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["y"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx(0.4)  # (0 + 0.8) / 2


def test_eer_by_hand():
    # positives 0.9 0.8 0.4 ; negatives 0.7 0.3 0.2 0.1
    # thresholds (desc): FAR/FRR = inf 0/1, .9 0/.667, .8 0/.333, .7 .25/.333, .4 .25/0 -> cross between .7 and .4
    # from (FAR .25, FRR .333) to (.25, 0): FAR stays .25, FRR falls through .25 -> EER = 0.25
    s = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    y = [1, 1, 1, 0, 0, 0, 0]
    assert equal_error_rate(s, y) == pytest.approx(0.25)
    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(0.0)  # separable
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(1.0)  # inverted
    # interpolated crossing: pos .6 .4, neg .5 .3 -> points (0,1) (0,.5) (.5,.5)... crosses exactly at .5
    assert equal_error_rate([0.6, 0.4, 0.5, 0.3], [1, 1, 0, 0]) == pytest.approx(0.5)


def test_binary_metrics_include_eer_of_positive_class():
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])
    y = [1, 1, 1, 0, 0, 0, 0]
    m = compute_metrics(y, probs.argmax(1).tolist(), ["noise", "speech"], probs)
    assert m["eer"] == pytest.approx(0.25) and m["eer_positive"] == "speech"
    assert m["accuracy"] == pytest.approx(5 / 7)


def test_bad_inputs_raise():
    with pytest.raises(EvaluationError):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(EvaluationError):
        confusion_matrix([0, 3], [0, 1], 2)
    with pytest.raises(EvaluationError):
        equal_error_rate([0.1, 0.2], [1, 1])


def test_confusion_png(tmp_path):
    p = tmp_path / "cm.png"
    plot_confusion(np.array(compute_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])["confusion"]), ["a", "b", "c"], p)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verbalizer_png_outlines_each_labels_top_units(tmp_path):
    w = np.array([[0.5, -1.0, 2.0, 0.1], [-0.5, 1.0, -2.0, -0.1]])
    p = tmp_path / "verb.png"
    assert plot_verbalizer(w, ["a", "b"], p, title="t", top_k=2) == [[2, 0], [1, 3]]
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_by_group_counts_each_group_by_hand():
    """Per speaker: how many of its clips are right, in sorted order; a length mismatch is refused."""
    truth = ["f", "f", "f", "m", "m", "f"]
    pred = ["f", "m", "f", "m", "f", "f"]
    groups = ["june", "june", "june", "nl", "nl", "allison"]
    out = accuracy_by_group(truth, pred, groups)
    assert list(out) == ["allison", "june", "nl"]
    assert out["june"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert out["nl"] == {"n": 2, "correct": 1, "accuracy": 0.5} and out["allison"]["accuracy"] == 1.0
    assert sum(g["correct"] for g in out.values()) == 4  # the split's accuracy, 4 of 6, is the groups' sum
    with pytest.raises(ValueError, match="one label, prediction and group per clip"):
        accuracy_by_group(truth, pred[:-1], groups)
