"""One collector per allow-listed Debian package: which files are speech or non-speech, who speaks (speaker,
language, gender) and what is said (text, keyword), from each package's own file names and metadata (the
manifest fields are described in the ``real_corpus`` module docstring)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from .real_packages import Clip, RealCorpusError, _license, check_allowed, extracted_root

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
