"""Real-speech evaluation tasks from the allow-listed corpus (``real_corpus`` manifest rows), split by speaker.

``make_tasks(rows, split)`` -> ``{task: [Example(path, label, split)]}`` with splits ``train`` / ``dev`` / ``test``:
a speaker is in train (+ dev) or in test, never both (``split``: ``{speaker: "train" | "test"}``, from
``real_corpus.speaker_split`` or :func:`eval_split`). Tasks:

- ``language-id``: label = language of speech clips; only languages with a speaker on each side;
- ``keyword``: label = the ``word`` of one-word clips in ``keyword_language`` (English: hedgewars event words,
  digits); the words spoken by >= 2 train speakers and >= 1 test speaker, at most ``max_words`` of them (most
  speakers first);
- ``digits``: label = the digit (0-9) of the asterisk voice packages' ``digits/<n>`` prompts in Spanish, French,
  Italian and Russian (one telephone-prompt voice per package: the test side is the voices the speaker split puts
  there; the training side gets TTS renditions of the digit words in every language, ``DIGIT_WORDS``);
- ``vad``: ``speech`` vs ``noise`` (non-speech rows: real-world noise, tones, effects); non-speech clips have no speaker,
  so they are split by a hash of their group (source + file stem without digits) instead;
  clips whose ``word`` is a non-lexical vocalisation (:data:`VOCALISATIONS`: a laugh, a cough, a grunt, a scream)
  are left out: a voice but no word, so neither ``speech`` nor ``noise``;
- ``gender``: ``female`` / ``male`` where the package says it.

Dev = every 8th train clip of a speaker by a hash of its path (dev is for early stopping only).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from .manifest import Example, write_wav

TASK_NAMES = ("language-id", "keyword", "digits", "vad", "gender")
DIGIT_WORDS = {  # what the digits are called, for the TTS renditions in the digits task's training set
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
    "ru": ("ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"),
}
MIN_SECONDS = 0.2  # shorter rows (a few empty or click-length files) are left out of every task
# hedgewars voice events that are a voice but no word (scream, grunt, cough, moan, laugh, hum): neither speech nor
# noise, so out of the vad task
VOCALISATIONS = frozenset({"flyaway", "hmm", "laugh", "ooff", "ow", "poisoncough", "poisonmoan"})


def text_key(s: str) -> int:
    """A draw key in [0, 2**32) from text: the first 32 bits of its SHA-256 (the same on every machine and folder)."""
    return int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)


def eval_split(rows: Sequence[dict], test_fraction: float = 0.3, seed: int = 0) -> dict[str, str]:
    """``{speaker: split}`` for speech speakers (``real_corpus.speaker_split``), with non-speech groups added."""
    from .real_corpus import speaker_split

    return speaker_split([r for r in rows if r.get("kind", "speech") == "speech" and r.get("speaker")],
                         test_fraction, seed)


def _nonspeech_group(r: dict) -> str:
    p = Path(r["path"])
    stem = p.parent.name if re.fullmatch(r"\d+", p.stem) else p.stem  # a segment of a long clip: its file
    return f"{r['source']}:{re.sub(r'[0-9_-]+', '', stem)}"


def speaker_of(r: dict) -> str:
    """Whose clip a row is, for per-speaker scores: the corpus's ``speaker`` id (the ids :func:`describe` counts; a
    non-speech row's is its package's sound group, e.g. ``hedgewars-sfx``); a non-speech row without one gets the file
    group :func:`split_of` splits it by (``<source>:<file stem without digits>``; needs the row's ``path`` and
    ``source``, else ``KeyError``), a speech row without one ``?``. Non-speech is split by file group, which is finer
    than the sound group: one sound group can have clips on both sides."""
    if r.get("speaker"):
        return r["speaker"]
    return _nonspeech_group(r) if r.get("kind", "speech") == "nonspeech" else "?"


def split_of(r: dict, split: dict[str, str], test_fraction: float = 0.3) -> str | None:
    """``train`` / ``test`` of one row (speech: its speaker's side; non-speech: its group's hash); None if unsplit."""
    if r.get("kind", "speech") == "nonspeech":
        return "test" if text_key(_nonspeech_group(r)) % 1000 < test_fraction * 1000 else "train"
    return split.get(r.get("speaker", ""))


def _with_dev(key: str, s: str) -> str:
    return "dev" if s == "train" and text_key(key) % 8 == 7 else s


def row_key(r: dict) -> str:
    """A row's identity inside the corpus, the same wherever the corpus and the work folder lie: its corpus-relative
    ``path``, or for a piece of a long clip (``segment_long``) that clip's path and the piece's index."""
    return r.get("key") or r["path"]


def make_tasks(rows: Sequence[dict], split: dict[str, str], base: str | Path, *, max_words: int = 12,
               keyword_language: str = "en", test_fraction: float = 0.3,
               max_per_class_speaker: int = 60) -> dict[str, list[Example]]:
    """Task manifests (paths under ``base``; absolute row paths are kept) as described in the module docstring.

    ``max_per_class_speaker`` caps the clips one speaker gives one class (so one talkative speaker does not
    become the class); the cap takes clips in path order."""
    base = Path(base)
    out: dict[str, list[Example]] = {}
    rows = [r for r in rows if float(r.get("duration", 1.0)) >= MIN_SECONDS]
    speech = [r for r in rows if r.get("kind", "speech") == "speech" and split.get(r.get("speaker", ""))]

    def add(task: str, r: dict, label: str, s: str, counts: Counter) -> None:
        key = (r.get("speaker") or _nonspeech_group(r), label)
        if counts[key] >= max_per_class_speaker:
            return
        counts[key] += 1
        out.setdefault(task, []).append(Example(str(base / r["path"]), label, _with_dev(row_key(r), s)))

    def sides(key: str, pool: list[dict]) -> dict[str, dict[str, set]]:
        seen: dict[str, dict[str, set]] = defaultdict(lambda: {"train": set(), "test": set()})
        for r in pool:
            if r.get(key):
                seen[r[key]][split[r["speaker"]]].add(r["speaker"])
        return seen

    langs = {k for k, v in sides("language", speech).items() if v["train"] and v["test"]}
    c: Counter = Counter()
    for r in sorted(speech, key=lambda r: r["path"]):
        if r.get("language") in langs:
            add("language-id", r, r["language"], split[r["speaker"]], c)
    kw_pool = [r for r in speech if r.get("language") == keyword_language]
    words = sides("word", kw_pool)
    ok = [w for w, v in words.items() if len(v["train"]) >= 2 and v["test"]]
    ok = sorted(ok, key=lambda w: (-len(words[w]["train"] | words[w]["test"]), w))[:max_words]
    c = Counter()
    for r in sorted(kw_pool, key=lambda r: r["path"]):
        if r.get("word") in ok:
            add("keyword", r, r["word"], split[r["speaker"]], c)
    c = Counter()
    for r in sorted(speech, key=lambda r: r["path"]):
        if (r.get("language") in DIGIT_WORDS and r.get("source", "").startswith("asterisk")
                and re.fullmatch(r"[0-9]", r.get("word", ""))):
            add("digits", r, r["word"], split[r["speaker"]], c)
    c = Counter()
    for r in sorted(rows, key=lambda r: r["path"]):
        s = split_of(r, split, test_fraction)
        if s is not None and r.get("word", "") not in VOCALISATIONS:
            add("vad", r, "noise" if r.get("kind") == "nonspeech" else "speech", s, c)
    c = Counter()
    for r in sorted(speech, key=lambda r: r["path"]):
        if r.get("gender") in ("female", "male"):
            add("gender", r, r["gender"], split[r["speaker"]], c)
    return out


def describe(examples: Sequence[Example], rows_by_path: dict[str, dict]) -> dict:
    """Clips and speakers per split, classes and chance (majority class of test) of one task."""
    per: dict[str, dict] = {}
    for s in ("train", "dev", "test"):
        ex = [e for e in examples if e.split == s]
        spk = {rows_by_path.get(e.path, {}).get("speaker") for e in ex} - {None, ""}
        per[s] = {"clips": len(ex), "speakers": len(spk)}
    test = Counter(e.label for e in examples if e.split == "test")
    labels = sorted({e.label for e in examples})
    return {"labels": labels, "classes": len(labels), **per,
            "chance": round(max(test.values()) / max(1, sum(test.values())), 3) if test else None}


__all__ = ["DIGIT_WORDS", "TASK_NAMES", "VOCALISATIONS", "describe", "eval_split", "make_tasks", "row_key", "segment_long",
           "speaker_of", "split_of"]


def segment_long(rows: Sequence[dict], base: str | Path, out: str | Path, max_seconds: float = 10.0,
                 seconds: float = 5.0, max_segments: int = 12) -> list[dict]:
    """Rows longer than ``max_seconds`` (music, long recordings) -> up to ``max_segments`` rows of ``seconds`` each,
    written once as 16 kHz WAVs under ``out`` (absolute paths; speaker, labels and group kept; ``key``: the long
    clip's corpus path and ``#<index>``, so the dev split drawn from it (``make_tasks``) does not depend on where
    ``out`` lies). Short rows pass."""
    import soundfile as sf

    out_rows, out = [], Path(out)
    for r in rows:
        if float(r.get("duration", 0)) <= max_seconds:
            out_rows.append(r)
            continue
        stem = out / Path(r["path"]).with_suffix("")
        n = min(max_segments, int(float(r["duration"]) // seconds))
        if not (stem / f"{n - 1:02d}.wav").exists():
            wav, sr = sf.read(Path(base) / r["path"], dtype="float32")
            stem.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                write_wav(stem / f"{i:02d}.wav", wav[int(i * seconds * sr):int((i + 1) * seconds * sr)], sr)
        out_rows += [dict(r, path=str((stem / f"{i:02d}.wav").resolve()), key=f"{r['path']}#{i:02d}", duration=seconds)
                     for i in range(n)]
    return out_rows
