"""Stage records of a resumable build (speechprompt/training/stages.py): claim, adopt, refuse."""

from __future__ import annotations

import json

import pytest

from speechprompt.training.stages import RECORD, StageMismatch, Stages, digest_file


def test_a_claimed_stage_is_reused_only_with_the_same_key(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    st.claim("tts", {"minutes": 120.0, "seed": 0}, made=False)
    st.claim("tts", {"seed": 0, "minutes": 120.0}, made=True)  # same key: fine, order of fields does not matter
    again = Stages(tmp_path, said.append)  # read back from disk
    again.claim("tts", {"minutes": 120.0, "seed": 0}, made=True)
    with pytest.raises(StageMismatch) as err:
        again.claim("tts", {"minutes": 60.0, "seed": 0}, made=True)
    assert err.value.stage == "tts" and err.value.differs == {"minutes": (120.0, 60.0)}
    assert "minutes: 120.0 there, 60.0 now" in str(err.value)
    assert json.loads((tmp_path / RECORD).read_text()) == {"tts": {"minutes": 120.0, "seed": 0}}  # unchanged
    assert said == []


def test_nested_keys_and_tuples_compare_as_written(tmp_path):
    st = Stages(tmp_path)
    key = {"real": {"manifest": "ab", "seed": 0}, "pitch": (1.0, 2.0)}
    st.claim("feats", key, made=False)
    Stages(tmp_path).claim("feats", key, made=True)
    with pytest.raises(StageMismatch) as err:
        Stages(tmp_path).claim("feats", {**key, "real": {"manifest": "cd", "seed": 0}}, made=True)
    assert list(err.value.differs) == ["real"]


def test_files_without_a_record_are_adopted_once_with_a_message(tmp_path):
    said: list[str] = []
    (tmp_path / "tts.npz").write_bytes(b"x")
    Stages(tmp_path, said.append).claim("tts", {"minutes": 1.0}, made=True)
    assert len(said) == 1 and "without a record" in said[0]
    Stages(tmp_path, said.append).claim("tts", {"minutes": 1.0}, made=True)
    assert len(said) == 1  # recorded now
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind


def test_digest_file_follows_the_bytes(tmp_path):
    (tmp_path / "a").write_text("one\n")
    (tmp_path / "b").write_text("one\n")
    d = digest_file(tmp_path / "a")
    assert d == digest_file(tmp_path / "b") and len(d) == 16
    (tmp_path / "b").write_text("two\n")
    assert digest_file(tmp_path / "b") != d
