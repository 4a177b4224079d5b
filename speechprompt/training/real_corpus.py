"""A reproducible corpus of real human speech (and real-world non-speech) from an allow-list of Debian packages.

Issue 14: the default backbone must understand real voices. This module fetches ONLY the packages of
:data:`ALLOWED_PACKAGES` (``apt-get download`` + ``dpkg-deb -x`` into a cache folder; a ``.deb`` already in
``<cache>/debs/`` is not downloaded again and an extracted package is not extracted again), converts every usable
clip to 16 kHz mono 16-bit WAV under ``<cache>/wav/<source>/...`` (resumable: a WAV that exists is not converted
again) and writes ``<cache>/manifest.jsonl`` and ``<cache>/sources.json``. Nothing here is committed: the audio stays
in the cache folder (``.cache/real_corpus/`` by default, git-ignored).

Manifest fields (one JSON object per clip):

``path``      the WAV, relative to the cache folder (16 kHz, mono, PCM 16-bit);
``source``    the Debian package it comes from;
``speaker``   a stable speaker id (``asterisk-es-allison``, ``fillets-cs-small``, ``hedgewars-pirate``,
              ``tuxpaint-fr``, ...). For non-speech clips it names the group of sounds (``hedgewars-sfx``), so a
              speaker split also splits the noise by origin. A speaker id never spans two packages' voices that
              the packages say are the same person, and is deliberately coarse where a package mixes several
              unnamed recorders (tuxpaint: one id per language, see :func:`collect_tuxpaint`);
``language``  ISO 639-1 code of the spoken language, ``""`` for non-speech or when the package does not say;
``gender``    ``female`` / ``male`` where the package or its documentation says it, else ``""`` (never guessed);
``text``      the transcript where the package has one (fillets subtitles, tuxpaint stamp descriptions,
              pocketsphinx transcriptions), else ``""``;
``word``      a normalised keyword label when the clip is one word or number and the package names it:
              asterisk ``digits/<n>`` -> ``"<n>"`` and ``letters/<x>`` -> ``"<x>"``, tuxpaint number and letter
              stamps likewise, hedgewars voice events (``Ow2.ogg`` -> ``"ow"``, ``Uh-oh.ogg`` -> ``"uh-oh"``);
              the same meaning gets the same label across languages; else ``""``;
``kind``      ``speech`` or ``nonspeech`` (beeps, tones, modem signals, silence, sound effects, animal noises,
              music). Ambiguous sounds (human grunts in effect folders, jingles, sounds that may hold speech) are
              left out entirely rather than labelled;
``duration``  seconds (float) of the converted WAV;
``license``   the licence short name that the package's ``copyright`` file gives for the clip.

The allow-list is a hard rule: asking for any other package raises :class:`NotAllowedError`. Other Debian speech
packages are reserved for independent evaluation, and ``/usr/share/sounds/alsa`` stays a test set.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # Hz, every converted clip

ALLOWED_PACKAGES: tuple[str, ...] = (
    "fillets-ng-data-cs",
    "fillets-ng-data-nl",
    "fillets-ng-data",
    "tuxpaint-stamps-default",
    "asterisk-core-sounds-es-g722",
    "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-it-g722",
    "asterisk-core-sounds-ru-g722",
    "asterisk-prompt-it-menardi-wav",
    "hedgewars-data",
    "codec2-examples",
    "pocketsphinx-testdata",
)

DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "real_corpus"

DECODERS = ("g722", "soundfile", "raw8k", "raw16k")

Progress = Callable[[str], None]


class RealCorpusError(RuntimeError):
    """The corpus cannot be built (a failed download/extraction, an unreadable clip, a missing package tree)."""


class NotAllowedError(RealCorpusError, ValueError):
    """A package outside :data:`ALLOWED_PACKAGES` was requested."""


@dataclass(frozen=True)
class Clip:
    """One clip to convert: ``src`` (absolute source file), ``decoder`` (one of :data:`DECODERS`) and its
    manifest row without ``duration`` (``path`` is relative to the cache folder)."""

    src: str
    decoder: str
    path: str
    source: str
    speaker: str
    language: str = ""
    gender: str = ""
    text: str = ""
    word: str = ""
    kind: str = "speech"
    license: str = ""


@dataclass
class BuildReport:
    """What :func:`build_corpus` did: clips ``converted`` now, ``skipped`` (already converted), ``duplicates``
    dropped (same bytes as an earlier clip of the same package), per-package ``versions``, and the ``rows``
    written to ``manifest.jsonl``."""

    converted: int = 0
    skipped: int = 0
    duplicates: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


def check_allowed(packages: Iterable[str]) -> list[str]:
    """Return ``packages`` as a list, or raise :class:`NotAllowedError` naming every package not allow-listed."""
    packages = list(packages)
    bad = [p for p in packages if p not in ALLOWED_PACKAGES]
    if bad:
        raise NotAllowedError(
            f"not on the real-corpus allow-list: {', '.join(bad)}; allowed: {', '.join(ALLOWED_PACKAGES)} "
            "(other speech packages are reserved for independent evaluation)")
    return packages


# ---------------------------------------------------------------------------------------------- fetch / extract


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RealCorpusError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def extracted_root(cache: Path, package: str) -> Path:
    """The folder ``package`` is extracted into: ``<cache>/x/<package>/`` (its ``usr/share/...`` tree)."""
    return Path(cache) / "x" / package


def _marker(cache: Path, package: str) -> Path:
    return Path(cache) / "x" / f"{package}.done"


def fetch_package(cache: Path, package: str, progress: Progress | None = None) -> str:
    """Download (unless a ``<package>_*.deb`` is already in ``<cache>/debs/``) and extract one allow-listed package.

    Extraction is skipped when ``<cache>/x/<package>.done`` exists (it records the version). Returns the
    package version. Raises :class:`NotAllowedError` or :class:`RealCorpusError`.
    """
    check_allowed([package])
    cache = Path(cache)
    marker = _marker(cache, package)
    if marker.exists():
        return json.loads(marker.read_text()).get("version", "")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        if progress:
            progress(f"apt-get download {package}")
        _run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise RealCorpusError(f"apt-get download {package} left no {package}_*.deb in {debs}")
    deb = found[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    root = extracted_root(cache, package)
    if progress:
        progress(f"dpkg-deb -x {deb.name}")
    root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(root)])
    marker.write_text(json.dumps({"version": version, "deb": deb.name}))
    return version


# ---------------------------------------------------------------------------------------------- licences


def copyright_path(cache: Path, package: str) -> Path:
    """The package's ``usr/share/doc/<package>/copyright`` inside its extracted tree."""
    return extracted_root(cache, package) / "usr" / "share" / "doc" / package / "copyright"


def dep5_license(text: str, pattern: str = "*", default: str = "") -> str:
    """The ``License:`` short name of the first machine-readable (DEP-5) stanza whose ``Files:`` field lists
    ``pattern`` (as one of its space-separated globs), falling back to the ``Files: *`` stanza, then ``default``."""
    stanzas = re.split(r"\n\s*\n", text)
    found: dict[str, str] = {}
    for stanza in stanzas:
        files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", stanza, re.M)
        lic = re.search(r"^License:[ \t]*(\S+)", stanza, re.M)
        if not files or not lic:
            continue
        for glob in files.group(1).split():
            found.setdefault(glob, lic.group(1))
    return found.get(pattern) or found.get("*") or default


def _license(cache: Path, package: str, pattern: str = "*", default: str = "") -> str:
    path = copyright_path(cache, package)
    return dep5_license(path.read_text(errors="replace"), pattern, default) if path.exists() else default


# ---------------------------------------------------------------------------------------------- collectors

ASTERISK_NONSPEECH = {"beep", "beeperr", "ascending-2tone", "descending-2tone"}
ASTERISK_SKIP = {"confbridge-begin-glorious-a", "confbridge-begin-glorious-b", "confbridge-begin-glorious-c"}
_ASTERISK_VOICE = re.compile(r"^([a-z]{2})_[A-Z]{2}_([fm])_(\w+)$")


def _rel_wav(source: str, rel: Path) -> str:
    return f"wav/{source}/{rel.with_suffix('.wav').as_posix()}"


def collect_asterisk(cache: Path, package: str) -> list[Clip]:
    """Asterisk prompts (``asterisk-core-sounds-*-g722``: raw G.722; ``asterisk-prompt-it-menardi-wav``: WAV).

    The voice folder ``<lang>_<COUNTRY>_<f|m>_<Name>`` gives language, gender and speaker
    (``asterisk-<lang>-<name>``). Beeps and tones and ``silence/*`` are ``nonspeech`` (speaker
    ``asterisk-<lang>-<name>-tones``); the ``confbridge-begin-glorious-*`` jingles are left out. Words:
    ``digits/<n>`` -> ``"<n>"``, ``letters/<x>`` -> ``"<x>"``. No transcripts are shipped. Licence: the
    ``Files: <lang>-*`` stanza of the copyright file (``es`` falls back to ``Files: *``).
    """
    sounds = extracted_root(cache, package) / "usr" / "share" / "asterisk" / "sounds"
    clips: list[Clip] = []
    for voice in sorted(p for p in sounds.iterdir() if p.is_dir()):
        m = _ASTERISK_VOICE.match(voice.name)
        if not m:
            continue
        lang, g, name = m.group(1), m.group(2), m.group(3).lower()
        gender = {"f": "female", "m": "male"}[g]
        lic = _license(cache, package, f"{lang}-*")
        speaker = f"asterisk-{lang}-{name}"
        for f in sorted(voice.rglob("*")):
            if f.suffix not in (".g722", ".wav") or not f.is_file():
                continue
            rel = f.relative_to(voice)
            stem, parent = rel.with_suffix("").name, rel.parent.as_posix()
            if stem in ASTERISK_SKIP:
                continue
            nonspeech = stem in ASTERISK_NONSPEECH or parent == "silence"
            word = ""
            if parent == "digits" and stem.isdigit():
                word = str(int(stem))
            elif parent == "letters" and re.fullmatch(r"[a-z]", stem):
                word = stem
            clips.append(Clip(
                src=str(f), decoder="g722" if f.suffix == ".g722" else "soundfile",
                path=_rel_wav(package, Path(voice.name) / rel), source=package,
                speaker=speaker + ("-tones" if nonspeech else ""), language="" if nonspeech else lang,
                gender="" if nonspeech else gender, word=word, kind="nonspeech" if nonspeech else "speech",
                license=lic))
    return clips


# Grammatical gender of the two heroes in the Czech subtitles (dialogs_cs.lua): the small fish speaks of herself
# in feminine past tense ("Myslela jsem", "Viděla jsem"), the big fish in masculine ("Myslel jsem", "jsem řekl").
FILLETS_GENDER = {"small": "female", "big": "male"}
_LUA_STR = r'"((?:[^"\\]|\\.)*)"'
_DIALOG = re.compile(r"dialogId\(\s*" + _LUA_STR + r"\s*,\s*" + _LUA_STR + r"\s*,\s*" + _LUA_STR + r"\s*\)"
                     r"(?:\s*dialogStr\(\s*" + _LUA_STR + r"\s*\))?")


def _lua_unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def parse_fillets_dialogs(text: str) -> dict[str, tuple[str, str]]:
    """Map sound id -> (font, subtitle) from a fillets ``dialogs_<lang>.lua``: ``dialogId(id, font, english)``
    followed by ``dialogStr(translation)``; the subtitle is the translation, or the English text when the file
    has none (``dialogs_en.lua``)."""
    out: dict[str, tuple[str, str]] = {}
    for m in _DIALOG.finditer(text):
        sid, font, english, translated = m.group(1), m.group(2), m.group(3), m.group(4)
        out[sid] = (font, _lua_unescape(translated if translated is not None else english))
    return out


def collect_fillets_voice(cache: Path, package: str) -> list[Clip]:
    """Fish Fillets NG voices (``fillets-ng-data-<lang>``): ``sound/<level>/<lang>/<id>.ogg``.

    Subtitles and the speaking character come from ``fillets-ng-data``'s ``script/<level>/dialogs_<lang>.lua``
    (``dialogId(id, font, english)`` + ``dialogStr(subtitle)``; the font names the character). Speaker:
    ``fillets-<lang>-<character>`` (``small``, ``big``, ``statue``, ``parrot``, ...); the package credits no voice
    actors, so each character of each dub is one speaker (an actor voicing two minor characters would be two ids).
    Gender only for the two heroes (:data:`FILLETS_GENDER`, from the Czech subtitles' grammar; the Dutch dub voices
    the same characters). Clips without a dialog entry, with an empty font (effects) or ``font_both`` (two voices)
    are left out. Licence: GPL-2 (the copyright file is not machine-readable; it states GPL version 2).
    """
    lang = package.rsplit("-", 1)[-1]
    sound = extracted_root(cache, package) / "usr" / "share" / "games" / "fillets-ng" / "sound"
    script = extracted_root(cache, "fillets-ng-data") / "usr" / "share" / "games" / "fillets-ng" / "script"
    if not script.is_dir():
        raise RealCorpusError(f"{package} needs fillets-ng-data (the subtitles) extracted: {script} is missing")
    per_level: dict[str, dict[str, tuple[str, str]]] = {}
    every: dict[str, tuple[str, str]] = {}
    for lua in sorted(script.glob(f"*/dialogs_{lang}.lua")):
        d = parse_fillets_dialogs(lua.read_text(errors="replace"))
        per_level[lua.parent.name] = d
        for k, v in d.items():
            every.setdefault(k, v)
    lic = _license(cache, package, "*", "GPL-2")
    clips: list[Clip] = []
    for f in sorted(sound.glob(f"*/{lang}/*.ogg")):
        level, sid = f.parent.parent.name, f.stem
        entry = per_level.get(level, {}).get(sid) or every.get(sid)
        if not entry:
            continue
        font, text = entry
        if not font.startswith("font_") or font == "font_both":
            continue
        character = font[len("font_"):]
        clips.append(Clip(
            src=str(f), decoder="soundfile", path=_rel_wav(package, f.relative_to(sound)), source=package,
            speaker=f"fillets-{lang}-{character}", language=lang, gender=FILLETS_GENDER.get(character, ""),
            text=text, license=lic))
    return clips


_FILLETS_SFX = re.compile(r"^(key\d+|enter\d+|space\d+|.*-x-click\d*|unlocking-\d+|laser|.*-x-(tik|tup|tiktak|motor|"
                          r"pracka)|.*-t-(phone\d*|budik))$")


def collect_fillets_data(cache: Path, package: str = "fillets-ng-data") -> list[Clip]:
    """Non-speech from ``fillets-ng-data``: shared effects (``sound/share``: bubbles, impacts), clearly non-vocal
    level effects (keys, clicks, phones, motors; others in the ``en`` folders may hold voices and are left out) as
    speaker ``fillets-sfx``, and the music (``music/*.ogg``) as ``fillets-music``. Licence: GPL-2."""
    base = extracted_root(cache, package) / "usr" / "share" / "games" / "fillets-ng"
    lic = _license(cache, package, "*", "GPL-2")
    clips: list[Clip] = []
    seen: set[str] = set()
    for f in sorted((base / "sound").rglob("*.ogg")):
        shared = f.parent.name == "share"
        if not shared and not _FILLETS_SFX.match(f.stem):
            continue
        if f.name in seen:  # the same effect is copied into several levels
            continue
        seen.add(f.name)
        clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, f.relative_to(base)),
                          source=package, speaker="fillets-sfx", kind="nonspeech", license=lic))
    for f in sorted((base / "music").glob("*.ogg")):
        clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, f.relative_to(base)),
                          source=package, speaker="fillets-music", kind="nonspeech", license=lic))
    return clips


# Hedgewars picks "<pack>_<locale>" for a team's voice pack when the game runs in that locale (Data/Locale codes:
# uk = Ukrainian). The other packs speak the English event names with an accent or a style; the "Russian" pack's
# language is not stated anywhere in the package, so it is left empty.
HEDGEWARS_LANGUAGE = {"Default_es": "es", "Default_pl": "pl", "Default_ru": "ru", "Default_uk": "uk",
                      "Russian_pl": "pl", "Russian": ""}
HEDGEWARS_SKIP = {"Kiss", "Yoohoo", "Whistle", "hell_growl", "hell_ooff", "hell_ow", "hell_ugh", "hogchant3",
                  "countdown1", "countdown2", "countdown3", "countdown4", "extratime", "denied", "Hellish"}


def hedgewars_word(stem: str) -> str:
    """The keyword label of a Hedgewars voice event file stem: lower case, take-number dropped
    (``Ow2`` -> ``ow``, ``Firepunch5`` -> ``firepunch``, ``Uh-oh`` -> ``uh-oh``)."""
    return re.sub(r"\d+$", "", stem).lower()


def collect_hedgewars(cache: Path, package: str = "hedgewars-data") -> list[Clip]:
    """Hedgewars voice packs ``Sounds/voices/<Pack>/<Event>.ogg`` (speaker ``hedgewars-<pack>``, word = event,
    no transcript: the event name is the line's purpose, not its words; gender is not documented), the game's
    sound effects ``Sounds/*.ogg`` (``hedgewars-sfx``, non-speech; vocal ones such as ``Kiss``, ``Yoohoo``,
    ``hell_ow`` or ``countdown*`` are left out) and ``Music/*.ogg`` (``hedgewars-music``, non-speech).
    Licences from the copyright file: ``Sounds/*`` GFDL-1.3, ``Sounds/Droplet*.ogg`` CC-BY-SA-3.0, music ``*``."""
    data = extracted_root(cache, package) / "usr" / "share" / "games" / "hedgewars" / "Data"
    lic_sounds = _license(cache, package, "share/hedgewars/Data/Sounds/*")
    lic_drop = _license(cache, package, "share/hedgewars/Data/Sounds/Droplet*.ogg")
    lic_all = _license(cache, package, "*")
    clips: list[Clip] = []
    for pack in sorted(p for p in (data / "Sounds" / "voices").iterdir() if p.is_dir()):
        lang = HEDGEWARS_LANGUAGE.get(pack.name, "en")
        for f in sorted(pack.glob("*.ogg")):
            clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, f.relative_to(data)),
                              source=package, speaker=f"hedgewars-{pack.name.lower()}", language=lang,
                              word=hedgewars_word(f.stem), license=lic_sounds))
    for f in sorted((data / "Sounds").glob("*.ogg")):
        if f.stem in HEDGEWARS_SKIP:
            continue
        clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, f.relative_to(data)),
                          source=package, speaker="hedgewars-sfx", kind="nonspeech",
                          license=lic_drop if f.name.startswith("Droplet") else lic_sounds))
    for f in sorted((data / "Music").glob("*.ogg")):
        clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, f.relative_to(data)),
                          source=package, speaker="hedgewars-music", kind="nonspeech", license=lic_all))
    return clips


_TUX_DESC = re.compile(r"^(?P<stamp>.+?)_desc(?:_(?P<loc>[A-Za-z]{2,3}(?:_[A-Za-z]{2})?))?$")
_TUX_MATH = re.compile(r"^(?P<stamp>\d)_(?P<loc>[A-Za-z]{2,3}(?:_[A-Za-z]{2})?)$")
_TUX_LETTER = re.compile(r"^([a-z])_(?:filled|outlined)$")
TUXPAINT_SKIP = {"mad", "happy", "sad", "excited", "apollo_lander", "dreydl-hay", "dreydl-nun", "dreydl-shin",
                 "dreydl-gimmel", "santahat", "ghost", "no_uturn", "xing_ped", "xing_school", "final-roll-call"}


def _tux_text(txt: Path, loc: str) -> str:
    """The description of a stamp in locale ``loc`` from its ``<stamp>.txt`` (first line: English;
    ``<loc>.utf8=...`` lines: translations)."""
    if not txt.exists():
        return ""
    lines = txt.read_text(errors="replace").splitlines()
    if not loc or loc in ("en", "en_US"):
        return lines[0].strip() if lines else ""
    for key in (loc, loc.split("_")[0]):
        for line in lines:
            if line.startswith(f"{key}.utf8="):
                return line.split("=", 1)[1].strip()
    return ""


def collect_tuxpaint(cache: Path, package: str = "tuxpaint-stamps-default") -> list[Clip]:
    """Tux Paint stamps: spoken descriptions ``<stamp>_desc[_<locale>].ogg|.wav`` and spoken numbers
    ``symbols/math/<n>_<locale>.ogg`` (speech), stamp sound effects ``<stamp>.ogg`` (non-speech: animals,
    tools, instruments, vehicles; speaker ``tuxpaint-sfx``).

    Several people recorded each language (the changelog credits e.g. Jacques Chion and PaulK for French,
    Estefania Ortiz and a contributor's son for Spanish, Schoolsplay sets for numbers, "various Brazilian school
    children" for pt_BR) and no file says which, so a stamp voice is one speaker id per language
    (``tuxpaint-<lang>``): coarse, but no voice can straddle a speaker split. Gender is unknown. Text: the stamp's
    ``.txt`` description in that locale; word: the number (math stamps) or letter (alphabet stamps). The
    unsuffixed English-alphabet letter sounds are English (``alphabets/english``); the unsuffixed math sounds and
    German-alphabet sounds are not labelled with a language unless the folder says it (``alphabets/german``).
    Faces, holiday and road-sign sounds that may hold voices are left out. Licence: GPL-2 (``Files: *``).
    """
    stamps = extracted_root(cache, package) / "usr" / "share" / "tuxpaint" / "stamps"
    lic = _license(cache, package, "*")
    clips: list[Clip] = []
    for f in sorted(stamps.rglob("*")):
        name = f.name
        if name.endswith(".ogg.ogg"):
            name = name[: -len(".ogg")]
        stem, ext = name.rsplit(".", 1) if "." in name else (name, "")
        if ext not in ("ogg", "wav") or not f.is_file():
            continue
        rel = f.relative_to(stamps).parent / stem
        d, m = _TUX_DESC.match(stem), _TUX_MATH.match(stem) if f.parent.name == "math" else None
        if d or m:
            g = (d or m).groupdict()
            stamp, loc = g["stamp"], g["loc"] or ""
            lang = loc.split("_")[0].lower() if loc else "en"
        elif f.parent.name == "math" and stem.isdigit():
            stamp, loc, lang = stem, "", ""
        elif "alphabets" in f.parts:
            stamp, loc = stem, ""
            lang = {"english": "en", "german": "de"}.get(f.relative_to(stamps).parts[2], "")
        else:
            if stem in TUXPAINT_SKIP:
                continue
            clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, rel), source=package,
                              speaker="tuxpaint-sfx", kind="nonspeech", license=lic))
            continue
        word = ""
        if f.parent.name == "math" and stamp.isdigit():
            word = stamp
        elif (lm := _TUX_LETTER.match(stamp)) and "english" in f.parts:
            word = lm.group(1)
        clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, rel), source=package,
                          speaker=f"tuxpaint-{lang}" if lang else "tuxpaint-unlabelled", language=lang,
                          text=_tux_text(f.parent / f"{stamp}.txt", loc), word=word, license=lic))
    return clips


# codec2 test clips: the wav/ folder (8 kHz, except *_16k*), plus raw-only 8 kHz s16 clips. Coded versions share
# the speaker of their original (f2400 <- forig, m2400 <- morig), excerpts that of the full clip (hts1a <- hts1).
CODEC2_SPEAKER = {"f2400": "forig", "m2400": "morig", "hts1a": "hts1", "hts2a": "hts2", "ve9qrp_10s": "ve9qrp"}
CODEC2_RAW_SPEECH = {"g3plx", "kristoff", "hts1", "hts2"}
CODEC2_NONSPEECH = {"sine1k_2Hz_spread", "sine1k_2ms_delay_2Hz_spread", "test_datac1_006", "testframes_700d"}
CODEC2_SKIP_WAV = {"all"}  # a concatenation of the other clips


def collect_codec2(cache: Path, package: str = "codec2-examples") -> list[Clip]:
    """codec2 example speech (English test sentences and amateur-radio recordings; one speaker id per original
    recording, :data:`CODEC2_SPEAKER`; gender not documented) and modem/tone signals as non-speech
    (``codec2-signals``). ``raw/*.raw`` is 8 kHz signed 16-bit mono. Licence: LGPL-2.1 (``raw/* wav/*``)."""
    base = extracted_root(cache, package) / "usr" / "share" / "codec2"
    lic = _license(cache, package, "wav/*")
    clips: list[Clip] = []
    wavs = {f.stem: f for f in sorted((base / "wav").glob("*.wav")) if f.stem not in CODEC2_SKIP_WAV}
    for f in sorted((base / "raw").glob("*.wav")):
        wavs.setdefault(f.stem, f)
    for stem, f in sorted(wavs.items()):
        clips.append(Clip(src=str(f), decoder="soundfile", path=_rel_wav(package, f.relative_to(base)),
                          source=package, speaker=f"codec2-{CODEC2_SPEAKER.get(stem, stem)}", language="en",
                          license=lic))
    for f in sorted((base / "raw").glob("*.raw")):
        if f.stem in CODEC2_NONSPEECH:
            clips.append(Clip(src=str(f), decoder="raw8k", path=_rel_wav(package, f.relative_to(base)),
                              source=package, speaker="codec2-signals", kind="nonspeech", license=lic))
        elif f.stem in CODEC2_RAW_SPEECH and f.stem not in wavs:
            clips.append(Clip(src=str(f), decoder="raw8k", path=_rel_wav(package, f.relative_to(base)),
                              source=package, speaker=f"codec2-{CODEC2_SPEAKER.get(f.stem, f.stem)}",
                              language="en", license=lic))
    return clips


_TIDIGITS = {"z": "zero", "o": "oh", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
             "7": "seven", "8": "eight", "9": "nine"}


def _transcriptions(path: Path) -> dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^)]+)\)\s*$", line)
            if m:
                out[m.group(2).strip()] = " ".join(m.group(1).split())
    return out


def collect_pocketsphinx(cache: Path, package: str = "pocketsphinx-testdata") -> list[Clip]:
    """pocketsphinx test recordings (English, 16 kHz; ``*.raw`` is signed 16-bit mono): the LibriVox reading
    (one reader, ``librivox/transcription``), the ``cards`` set (``cards.transcription``), ``goforward.raw``
    (the only sentence of its ``goforward.gram``), ``tidigits/<spk>.<digits>.raw`` (transcript from the TIDIGITS
    file name: ``z`` zero, ``o`` oh) and ``numbers.raw`` / ``something.raw`` (no transcript). Each recording set
    is one speaker id; gender is not documented. Licence: BSD-2 (``Files: *``)."""
    data = extracted_root(cache, package) / "usr" / "share" / "pocketsphinx" / "test" / "data"
    lic = _license(cache, package, "*")
    clips: list[Clip] = []

    def add(f: Path, speaker: str, text: str) -> None:
        clips.append(Clip(src=str(f), decoder="raw16k" if f.suffix == ".raw" else "soundfile",
                          path=_rel_wav(package, f.relative_to(data)), source=package,
                          speaker=f"pocketsphinx-{speaker}", language="en", text=text, license=lic))

    trans = _transcriptions(data / "librivox" / "transcription")
    for f in sorted((data / "librivox").glob("*.wav")):
        add(f, "librivox", trans.get(f.stem, ""))
    trans = _transcriptions(data / "cards" / "cards.transcription")
    for f in sorted((data / "cards").glob("*.wav")):
        add(f, "cards", trans.get(f.stem, ""))
    gram = data / "goforward.gram"
    if (data / "goforward.raw").exists():
        m = re.search(r"public\s+<\w+>\s*=\s*([^;|]+);", gram.read_text()) if gram.exists() else None
        add(data / "goforward.raw", "goforward", m.group(1).strip() if m else "")
    for name in ("numbers", "something"):
        if (data / f"{name}.raw").exists():
            add(data / f"{name}.raw", name, "")
    for f in sorted((data / "tidigits").glob("*.raw")):
        spk, digits = (f.stem.split(".", 1) + [""])[:2]
        text = " ".join(_TIDIGITS[c] for c in digits if c in _TIDIGITS) if digits else ""
        add(f, f"tidigits-{spk}", text)
    return clips


COLLECTORS: dict[str, Callable[[Path, str], list[Clip]]] = {
    "fillets-ng-data-cs": collect_fillets_voice,
    "fillets-ng-data-nl": collect_fillets_voice,
    "fillets-ng-data": collect_fillets_data,
    "tuxpaint-stamps-default": collect_tuxpaint,
    "asterisk-core-sounds-es-g722": collect_asterisk,
    "asterisk-core-sounds-fr-g722": collect_asterisk,
    "asterisk-core-sounds-it-g722": collect_asterisk,
    "asterisk-core-sounds-ru-g722": collect_asterisk,
    "asterisk-prompt-it-menardi-wav": collect_asterisk,
    "hedgewars-data": collect_hedgewars,
    "codec2-examples": collect_codec2,
    "pocketsphinx-testdata": collect_pocketsphinx,
}


def collect(cache: Path, packages: Sequence[str]) -> tuple[list[Clip], int]:
    """Every clip of the (extracted) ``packages``, with byte-identical files inside one package dropped after the
    first (sorted by path). Returns ``(clips, n_duplicates)``."""
    clips: list[Clip] = []
    dups = 0
    for package in check_allowed(packages):
        if not extracted_root(cache, package).is_dir():
            raise RealCorpusError(f"{package} is not extracted under {extracted_root(cache, package)}")
        seen: set[str] = set()
        for clip in COLLECTORS[package](Path(cache), package):
            digest = hashlib.sha1(Path(clip.src).read_bytes()).hexdigest()
            if digest in seen:
                dups += 1
                continue
            seen.add(digest)
            clips.append(clip)
    return clips, dups


# ---------------------------------------------------------------------------------------------- conversion


def decode(src: str | Path, decoder: str) -> tuple[np.ndarray, int]:
    """Decode a source clip to float32 mono samples in [-1, 1] and its sample rate (Hz).

    ``g722``: raw G.722 via ``ffmpeg -f g722`` (16 kHz); ``soundfile``: any container libsndfile reads (WAV incl.
    mu-law, Ogg Vorbis); ``raw8k`` / ``raw16k``: headerless signed 16-bit little-endian mono at 8 / 16 kHz.
    """
    import soundfile as sf

    if decoder == "g722":
        proc = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "g722", "-i", str(src),
                               "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-"], capture_output=True)
        if proc.returncode != 0:
            raise RealCorpusError(f"ffmpeg could not decode {src}: {proc.stderr.decode(errors='replace')[-500:]}")
        return np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / 32768.0, SAMPLE_RATE
    if decoder in ("raw8k", "raw16k"):
        raw = Path(src).read_bytes()
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        return pcm, 8000 if decoder == "raw8k" else 16000
    if decoder == "soundfile":
        try:
            audio, sr = sf.read(str(src), dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile raises its own error type
            raise RealCorpusError(f"cannot read {src}: {exc}") from exc
        return audio.mean(axis=1), int(sr)
    raise RealCorpusError(f"unknown decoder {decoder!r} (one of {DECODERS})")


def to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    """Resample float32 mono ``audio`` from ``sr`` Hz to 16 kHz (soxr, high quality); unchanged when already 16 kHz."""
    if sr == SAMPLE_RATE:
        return audio.astype(np.float32)
    import soxr

    return soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)


def convert_clip(src: str, decoder: str, dst: str) -> bool:
    """Convert one clip to a 16 kHz mono PCM-16 WAV at ``dst``; ``False`` (nothing done) when ``dst`` exists.

    The WAV is written to a temporary name and renamed, so an interrupted run never leaves a partial file.
    """
    import soundfile as sf

    out = Path(dst)
    if out.exists():
        return False
    audio, sr = decode(src, decoder)
    audio = np.clip(to_16k(audio, sr), -1.0, 1.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".wav.part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        sf.write(str(tmp_path), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        tmp_path.replace(out)
    finally:
        tmp_path.unlink(missing_ok=True)
    return True


def _convert_job(args: tuple[str, str, str]) -> bool:
    return convert_clip(*args)


def wav_duration(path: str | Path) -> float:
    """Duration in seconds of a WAV file (frames / sample rate)."""
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / float(info.samplerate)


# ---------------------------------------------------------------------------------------------- build


def build_corpus(cache: str | Path = DEFAULT_CACHE, packages: Sequence[str] = ALLOWED_PACKAGES, workers: int = 2,
                 progress: Progress | None = None, fetch: bool = True) -> BuildReport:
    """Fetch, extract and convert ``packages`` into ``cache``; write ``manifest.jsonl`` and ``sources.json``.

    ``workers`` processes convert clips (a clip already converted is skipped, so an interrupted build resumes).
    ``fetch=False`` requires the packages to be extracted already (``<cache>/x/<package>.done``). ``progress``
    receives one line per step. ``fillets-ng-data-cs`` / ``-nl`` need ``fillets-ng-data`` for their subtitles: it is
    fetched with them even when not listed. Raises :class:`NotAllowedError` for a package off the allow-list.
    """
    cache = Path(cache)
    packages = check_allowed(packages)
    needed = list(packages)
    if any(p.startswith("fillets-ng-data-") for p in needed) and "fillets-ng-data" not in needed:
        needed.append("fillets-ng-data")
    report = BuildReport()
    for package in needed:
        if fetch:
            report.versions[package] = fetch_package(cache, package, progress)
        else:
            marker = _marker(cache, package)
            if not marker.exists():
                raise RealCorpusError(f"{package} is not extracted in {cache} (no {marker.name}); fetch it first")
            report.versions[package] = json.loads(marker.read_text()).get("version", "")
    clips, report.duplicates = collect(cache, packages)
    if progress:
        progress(f"{len(clips)} clips in {len(packages)} packages ({report.duplicates} duplicate files dropped)")
    todo = [c for c in clips if not (cache / c.path).exists()]
    report.skipped = len(clips) - len(todo)
    jobs = [(c.src, c.decoder, str(cache / c.path)) for c in todo]
    step = max(1, len(jobs) // 20)
    if jobs:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for i, done in enumerate(pool.map(_convert_job, jobs, chunksize=8), 1):
                    report.converted += int(done)
                    if progress and (i % step == 0 or i == len(jobs)):
                        progress(f"converted {i}/{len(jobs)}")
        else:
            for i, job in enumerate(jobs, 1):
                report.converted += int(_convert_job(job))
                if progress and (i % step == 0 or i == len(jobs)):
                    progress(f"converted {i}/{len(jobs)}")
    for c in clips:
        row = asdict(c)
        del row["src"], row["decoder"]
        row["duration"] = round(wav_duration(cache / c.path), 4)
        report.rows.append(row)
    write_manifest(cache / "manifest.jsonl", report.rows)
    (cache / "sources.json").write_text(
        json.dumps(summarize_sources(cache, report.rows, report.versions), indent=2, ensure_ascii=False) + "\n")
    return report


FIELDS = ("path", "source", "speaker", "language", "gender", "text", "word", "kind", "duration", "license")


def write_manifest(path: Path, rows: Iterable[dict]) -> None:
    """Write ``rows`` as JSON lines (UTF-8, the :data:`FIELDS` in order)."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({k: row[k] for k in FIELDS}, ensure_ascii=False) + "\n")


def read_manifest(path: str | Path) -> list[dict]:
    """Read a ``manifest.jsonl`` written by :func:`build_corpus`."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summarize_sources(cache: Path, rows: Sequence[dict], versions: dict[str, str]) -> dict[str, dict]:
    """Per package: ``version``, ``license`` (short names and the copyright file, relative to ``cache``),
    ``clips``, ``speech_clips``, ``nonspeech_clips``, ``hours``, ``speakers`` (id -> gender, speech only) and
    ``languages`` (code -> clips)."""
    out: dict[str, dict] = {}
    by_pkg: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_pkg[r["source"]].append(r)
    for package, version in versions.items():
        rs = by_pkg.get(package, [])
        speech = [r for r in rs if r["kind"] == "speech"]
        cp = copyright_path(cache, package)
        out[package] = {
            "version": version,
            "license": {"names": sorted({r["license"] for r in rs if r["license"]}),
                        "copyright_file": str(cp.relative_to(cache)) if cp.exists() else ""},
            "clips": len(rs),
            "speech_clips": len(speech),
            "nonspeech_clips": len(rs) - len(speech),
            "hours": round(sum(r["duration"] for r in rs) / 3600.0, 4),
            "speakers": {s: g for s, g in sorted({(r["speaker"], r["gender"]) for r in speech})},
            "languages": dict(sorted(Counter(r["language"] for r in speech if r["language"]).items())),
        }
    return out


# ---------------------------------------------------------------------------------------------- speaker split


def speaker_split(rows: Sequence[dict], test_fraction: float = 0.2, seed: int = 0) -> dict[str, str]:
    """Assign every speaker (never a single clip) to ``"train"`` or ``"test"``; returns ``{speaker: split}``.

    Speakers are stratified by language (a speaker's most frequent ``language``; ``""`` - non-speech groups and
    unlabelled voices - is a stratum of its own). In a stratum of ``n >= 2`` speakers, ``round(n *
    test_fraction)`` of them, at least 1 and at most ``n - 1``, go to test, so each such language has a speaker on
    each side. A language with a single speaker cannot be split by speaker: that speaker goes to ``train`` (the
    language is then unseen at test time; evaluations that need it must say so or drop it). The draw is
    deterministic for a given ``seed`` and set of speakers, independent of row order.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    langs: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        langs[r["speaker"]][r.get("language", "")] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for spk, counts in langs.items():
        lang = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        strata[lang].append(spk)
    split: dict[str, str] = {}
    for lang, speakers in sorted(strata.items()):
        speakers = sorted(speakers)
        n = len(speakers)
        n_test = 0 if n < 2 else min(n - 1, max(1, round(n * test_fraction)))
        random.Random(f"{seed}:{lang}").shuffle(speakers)
        for i, spk in enumerate(speakers):
            split[spk] = "test" if i < n_test else "train"
    return split
