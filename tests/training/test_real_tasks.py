"""Real-speech task building (speechprompt/training/real_tasks.py) and generated non-speech (nonspeech.py)."""

from __future__ import annotations

import numpy as np
import pytest

from speechprompt.training import nonspeech, real_tasks


def _row(path, speaker, language="", word="", kind="speech", source="asterisk-core-sounds-xx", gender=""):
    return {"path": path, "speaker": speaker, "language": language, "word": word, "kind": kind, "source": source,
            "gender": gender, "duration": 1.0}


def test_digits_task_keeps_speakers_apart_and_takes_only_single_digit_asterisk_prompts():
    rows = []
    for spk, lang in (("ast-es", "es"), ("ast-fr", "fr"), ("ast-it", "it"), ("ast-ru", "ru")):
        for w in ("0", "3", "9", "10", "20", "a"):
            rows.append(_row(f"{spk}/digits/{w}.wav", spk, lang, w))
    rows.append(_row("hw/one.wav", "hw-en", "en", "1", source="hedgewars-data"))  # not asterisk, not a listed language
    split = {"ast-es": "test", "ast-fr": "test", "ast-it": "train", "ast-ru": "train", "hw-en": "train"}
    digits = real_tasks.make_tasks(rows, split, "/c")["digits"]
    assert sorted({e.label for e in digits}) == ["0", "3", "9"]  # 10, 20 and letters are not digits
    assert {e.path.split("/")[2] for e in digits if e.split == "test"} == {"ast-es", "ast-fr"}
    assert {e.path.split("/")[2] for e in digits if e.split != "test"} == {"ast-it", "ast-ru"}
    assert len(digits) == 12 and not any("hw" in e.path for e in digits)
    assert set(real_tasks.DIGIT_WORDS) == {"es", "fr", "it", "ru"}
    assert all(len(words) == 10 for words in real_tasks.DIGIT_WORDS.values())


def test_vad_leaves_out_voiced_non_words_but_keeps_words_and_noise():
    rows = [_row("a/hello.wav", "a", "en", "hello"), _row("a/ooff.wav", "a", "en", "ooff"),
            _row("a/laugh.wav", "a", "en", "laugh"), _row("b/poisoncough.wav", "b", "en", "poisoncough"),
            _row("b/incoming.wav", "b", "en", "incoming"),
            _row("sfx/bang.wav", "", kind="nonspeech", source="game")]
    vad = real_tasks.make_tasks(rows, {"a": "train", "b": "test"}, "/c")["vad"]
    assert sorted(e.path.rsplit("/", 1)[1] for e in vad) == ["bang.wav", "hello.wav", "incoming.wav"]
    assert {e.label for e in vad} == {"speech", "noise"}
    assert "ooff" in real_tasks.VOCALISATIONS and "hello" not in real_tasks.VOCALISATIONS


@pytest.mark.parametrize("key", range(len(nonspeech.KINDS)))
def test_generated_nonspeech_is_deterministic_bounded_and_of_its_kind(key):
    kind, x = nonspeech.generate(3, key)
    kind2, y = nonspeech.generate(3, key)
    assert kind == kind2 == nonspeech.KINDS[key] and np.array_equal(x, y)
    assert x.dtype == np.float32 and 0.5 * 16000 <= len(x) <= 5.0 * 16000
    assert np.all(np.isfinite(x)) and 0.09 < np.max(np.abs(x)) < 0.91
    _, other = nonspeech.generate(4, key)
    assert len(other) != len(x) or not np.array_equal(other, x)


@pytest.mark.parametrize("seed", range(6))
def test_generated_tone_has_its_energy_near_one_frequency(seed):
    kind, x = nonspeech.generate(seed, nonspeech.KINDS.index("tone"))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    f = freqs[int(power.argmax())]
    near = power[np.abs(freqs - f) <= 0.03 * f + 5].sum()  # vibrato (<= 2 %) and the fades spread the line
    assert kind == "tone" and 100 * 0.97 <= f <= 4000 * 1.03 and near / power.sum() > 0.9


def test_real_speech_eval_never_carries_cells_over_from_another_backbone():
    """A rebuilt default (new fingerprint) recomputes every cell of its column: before this, the prompts of the
    previous backbone were kept under the new fingerprint (and its package installed as the demo)."""
    from tests.scripts import load_script

    reusable = load_script("real_speech_eval").reusable
    cells = {"fingerprint": "aaa", "v2": {"test": {"accuracy": 0.4}}, "logreg_hist": {}}
    assert reusable(cells, "aaa") is cells
    assert reusable(cells, "bbb") == {} and reusable({}, "bbb") == {}
