"""scripts/compare_backbones.py: the GSLM vs pGSLM table is built from the two runs' numbers."""

from tests.scripts import load_script


def _module():
    return load_script("compare_backbones")


def _run(acc_v2: float, eer_v2: float, acc_vb: float) -> dict:
    def cell(a):
        return {"test": {"accuracy": a}, "test_engine": {"accuracy": a / 2}}

    return {"question": {"v2": {**cell(acc_v2), "seconds": 12.5, "epochs": 9, "params": 8560},
                         "verbalizer_only": cell(acc_vb), "logreg_hist": cell(0.25),
                         "logreg_prosody": cell(acc_vb + 0.25)},
            "vad": {"v2": {"test": {"accuracy": 0.9, "eer": eer_v2}, "seconds": 3.0, "epochs": 2, "params": 8560}}}


def test_table_reports_each_backbone_and_the_gain():
    mod = _module()
    text = mod.render(_run(0.5, 0.10, 0.4), _run(0.75, 0.04, 0.6), {"gslm": "g", "pgslm": "p", "date": "d"})
    lines = text.splitlines()
    unseen = lines[lines.index("#### Test: unseen voices") + 4]
    assert unseen == "| question | 0.500 | 0.750 | +0.250 | 0.400 | 0.600 | 0.250 | 0.850 |"
    # EER: lower is better, so the gain is GSLM - pGSLM
    assert lines[lines.index("#### Test: unseen voices") + 5].startswith("| vad (EER) | 0.100 | 0.040 | +0.060 |")
    engine = lines[lines.index("#### Test: unseen engine (flite)") + 4]
    assert engine == "| question | 0.250 | 0.375 | +0.125 | 0.200 | 0.300 | 0.125 | 0.425 |"
    assert "| question | 12.5 (9) | 12.5 (9) | 8,560 / 8,560 |" in lines
    # a split neither run has is dropped, not filled with dashes
    seen = lines.index("#### Test: seen voices")
    assert lines[seen + 4] == ""


def test_seed_table_gives_mean_range_and_the_seeds_that_lose():
    """compare_defaults' spread over prompt seeds: mean (min-max) per default, the change of the means and how many
    seeds lose more than 0.02 (EER: lower is better, so its change is old - new)."""
    mod = load_script("compare_defaults")

    def run(acc: float, eer: float, seed: int) -> dict:
        return {"question": {"v2": {"test": {"accuracy": acc}, "seed": seed}},
                "vad": {"v2": {"test": {"accuracy": 0.9, "eer": eer}, "seed": seed}}}

    runs = [(s, run(o, oe, s), run(n, ne, s)) for s, o, n, oe, ne in
            [(100501, 0.50, 0.60, 0.00, 0.02), (1, 0.60, 0.55, 0.01, 0.01), (2, 0.70, 0.62, 0.02, 0.00)]]
    lines = mod.seed_table(runs).splitlines()
    assert lines[0] == "#### Test: unseen voices, over 3 prompt seeds (100501, 1, 2)"
    assert "| question | 0.600 (0.500-0.700) | 0.590 (0.550-0.620) | -0.010 | 2 of 3 |" in lines
    assert "| vad (EER) | 0.010 (0.000-0.020) | 0.010 (0.000-0.020) | +0.000 | 0 of 3 |" in lines
    assert mod._seed(run(0.5, 0.0, 7)) == 7 and mod._seed({"question": {"v2": {}}}) == 100501
