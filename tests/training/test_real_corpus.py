"""The real-speech corpus builder (speechprompt/training/real_corpus.py) on a tiny fake package tree.

Fake extracted packages are generated in ``tmp_path`` (tones written as raw G.722 by ffmpeg, Ogg Vorbis by
soundfile, a DEP-5 copyright file, a fillets dialogue file); nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechprompt.training import real_corpus as rc

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (G.722)")

AST = "asterisk-core-sounds-es-g722"
HW = "hedgewars-data"
FCS = "fillets-ng-data-cs"
FDATA = "fillets-ng-data"

COPYRIGHT = """Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2003-2010, Someone
License: CC-BY-SA-3.0

Files: ru-*
Copyright: 2010, Someone else
License: CC-BY-3.0
"""


def _tone(freq: float, sr: int, seconds: float = 0.3, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _g722(path: Path, freq: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration=0.3", "-ar", "16000", "-ac", "1", "-c:a", "g722",
                    "-f", "g722", "-y", str(path)], check=True)


def _ogg(path: Path, freq: float, sr: int = 22050, channels: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _tone(freq, sr, channels=channels), sr, format="OGG", subtype="VORBIS")


def _package(cache: Path, package: str, copyright_text: str = COPYRIGHT) -> Path:
    root = rc.extracted_root(cache, package)
    doc = root / "usr" / "share" / "doc" / package
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(copyright_text)
    (cache / "x" / f"{package}.done").write_text(json.dumps({"version": "0-test"}))
    return root / "usr" / "share"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("real_corpus")
    share = _package(cache, AST)
    voice = share / "asterisk" / "sounds" / "es_MX_f_Allison"
    _g722(voice / "digits" / "5.g722", 300)
    _g722(voice / "letters" / "b.g722", 350)
    _g722(voice / "vm-goodbye.g722", 400)
    _g722(voice / "beep.g722", 1000)
    share = _package(cache, HW, "Files: *\nCopyright: x\nLicense: GPL-2\n\n"
                                "Files: share/hedgewars/Data/Sounds/*\nCopyright: y\nLicense: GFDL-1.3\n")
    data = share / "games" / "hedgewars" / "Data"
    _ogg(data / "Sounds" / "voices" / "Pirate" / "Ow2.ogg", 220)
    _ogg(data / "Sounds" / "voices" / "Default_es" / "Hello.ogg", 240)
    _ogg(data / "Sounds" / "explosion.ogg", 90)
    _ogg(data / "Sounds" / "Kiss.ogg", 95)  # vocal effect: left out
    share = _package(cache, FCS, "GNU General Public License version 2\n")
    _ogg(share / "games" / "fillets-ng" / "sound" / "city" / "cs" / "vit-hs-klid1.ogg", 180, sr=44100)
    _ogg(share / "games" / "fillets-ng" / "sound" / "city" / "cs" / "vit-m-hlava.ogg", 190, sr=44100)
    _ogg(share / "games" / "fillets-ng" / "sound" / "city" / "cs" / "no-dialog.ogg", 200, sr=44100)
    share = _package(cache, FDATA, "GNU General Public License version 2\n")
    script = share / "games" / "fillets-ng" / "script" / "city"
    script.mkdir(parents=True)
    (script / "dialogs_cs.lua").write_text(
        'dialogId("vit-hs-klid1", "font_statue", "Citizens, please remain calm.")\n'
        'dialogStr("Občané. Zachovejte klid a rozvahu.")\n\n'
        'dialogId("vit-m-hlava", "font_small", "My \\"head\\".")\n'
        'dialogStr("Moje \\"hlava\\".")\n')
    return cache


@pytest.fixture(scope="module")
def built(cache):
    return rc.build_corpus(cache, [AST, HW, FCS], workers=2, fetch=False)


def _by_path(rows):
    return {Path(r["path"]).stem: r for r in rows}


def test_manifest_fields(cache, built):
    rows = rc.read_manifest(cache / "manifest.jsonl")
    assert rows == [{k: r[k] for k in rc.FIELDS} for r in built.rows]
    assert all(list(r) == list(rc.FIELDS) for r in rows)
    by = _by_path(rows)
    assert set(by) == {"5", "b", "vm-goodbye", "beep", "Ow2", "Hello", "explosion", "vit-hs-klid1", "vit-m-hlava"}
    five = by["5"]
    assert five["path"] == f"wav/{AST}/es_MX_f_Allison/digits/5.wav"
    assert (five["source"], five["speaker"], five["language"], five["gender"], five["word"], five["kind"]) == (
        AST, "asterisk-es-allison", "es", "female", "5", "speech")
    assert five["license"] == "CC-BY-SA-3.0"
    assert by["b"]["word"] == "b" and by["vm-goodbye"]["word"] == ""
    assert by["beep"]["kind"] == "nonspeech" and by["beep"]["language"] == "" and by["beep"]["gender"] == ""
    assert by["beep"]["speaker"] != five["speaker"]
    assert (by["Ow2"]["speaker"], by["Ow2"]["word"], by["Ow2"]["language"]) == ("hedgewars-pirate", "ow", "en")
    assert (by["Hello"]["language"], by["Hello"]["word"]) == ("es", "hello")
    assert by["Ow2"]["license"] == "GFDL-1.3"
    assert (by["explosion"]["kind"], by["explosion"]["speaker"]) == ("nonspeech", "hedgewars-sfx")
    statue, small = by["vit-hs-klid1"], by["vit-m-hlava"]
    assert (statue["speaker"], statue["language"], statue["text"]) == (
        "fillets-cs-statue", "cs", "Občané. Zachovejte klid a rozvahu.")
    assert statue["gender"] == "" and small["gender"] == "female" and small["text"] == 'Moje "hlava".'
    assert statue["license"] == "GPL-2"
    for r in rows:
        assert r["duration"] == pytest.approx(0.3, abs=0.05)


def test_sources_json(cache, built):
    sources = json.loads((cache / "sources.json").read_text())
    assert set(sources) == {AST, HW, FCS, FDATA}  # the subtitles package comes with the voices
    ast = sources[AST]
    assert ast["version"] == "0-test" and ast["clips"] == 4 and ast["nonspeech_clips"] == 1
    assert ast["speakers"] == {"asterisk-es-allison": "female"} and ast["languages"] == {"es": 3}
    assert ast["license"]["copyright_file"] == f"x/{AST}/usr/share/doc/{AST}/copyright"
    assert ast["hours"] == pytest.approx(4 * 0.3 / 3600, rel=0.2)


def test_wavs_are_16k_mono_pcm16(cache, built):
    for r in built.rows:
        info = sf.info(str(cache / r["path"]))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    audio, sr = sf.read(str(cache / _by_path(built.rows)["Ow2"]["path"]))
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / sr)[spectrum.argmax()] == pytest.approx(220, abs=5)


def test_second_run_converts_nothing(cache, built):
    stamp = {r["path"]: (cache / r["path"]).stat().st_mtime_ns for r in built.rows}
    again = rc.build_corpus(cache, [AST, HW, FCS], workers=1, fetch=False)
    assert again.converted == 0 and again.skipped == len(built.rows)
    assert {r["path"]: (cache / r["path"]).stat().st_mtime_ns for r in again.rows} == stamp


def test_speaker_split_keeps_speakers_whole():
    rows = []
    for lang, n in (("es", 5), ("fr", 2), ("ru", 1), ("", 3)):
        for s in range(n):
            rows += [{"speaker": f"{lang}-{s}", "language": lang, "path": f"{lang}{s}_{i}"} for i in range(4)]
    split = rc.speaker_split(rows, test_fraction=0.3, seed=1)
    assert set(split) == {r["speaker"] for r in rows} and set(split.values()) == {"train", "test"}
    for lang in ("es", "fr", ""):
        sides = {split[r["speaker"]] for r in rows if r["language"] == lang}
        assert sides == {"train", "test"}
    assert split["ru-0"] == "train"
    sides_of = {}
    for r in rows:
        sides_of.setdefault(r["speaker"], set()).add(split[r["speaker"]])
    assert all(len(s) == 1 for s in sides_of.values())
    assert rc.speaker_split(list(reversed(rows)), 0.3, seed=1) == split


def test_refuses_packages_off_the_allow_list(tmp_path):
    with pytest.raises(rc.NotAllowedError, match="asterisk-core-sounds-en-g722"):
        rc.build_corpus(tmp_path, [AST, "asterisk-core-sounds-en-g722"], fetch=False)
    with pytest.raises(rc.NotAllowedError, match="allow-list"):
        rc.fetch_package(tmp_path, "alsa-utils")
    assert not (tmp_path / "debs").exists()


def test_dep5_license_picks_the_stanza():
    assert rc.dep5_license(COPYRIGHT, "ru-*") == "CC-BY-3.0"
    assert rc.dep5_license(COPYRIGHT, "fr-*") == "CC-BY-SA-3.0"
    assert rc.dep5_license("not machine readable", "*", "GPL-2") == "GPL-2"
