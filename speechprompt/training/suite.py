"""Synthetic task suite mirroring the SpeechPrompt v2 benchmark (arXiv 2303.00733, Table 1).

``make_suite(out) -> out/<task>/manifest.csv (path,label,split,engine,voice) + out/<task>/clips/*.wav (16 kHz)``

Splits (voices from ``voices.py``, the default backbone's corpus list):
- ``train`` / ``dev`` / ``test_seen``: voices the backbone corpus uses (espeak-ng accents and variants, MBROLA,
  festival), random rate and pitch;
- ``test``: voices never in train nor in the backbone corpus (held-out espeak-ng variants and, for English,
  the held-out accents; held-out MBROLA speakers);
- ``test_engine``: the held-out engine (flite; English tasks only, flite speaks nothing else).
Every clip gets random lead/trail silence and coloured background noise; every random choice comes from
``numpy.random.default_rng([seed, task, split, index])``, so a suite is reproducible (and adding a task leaves the
clips of the others unchanged). The prosody tasks ``rate`` and ``emotion`` (``suite_prosody.py``) draw their class's
rate / pitch level / pitch range / loudness and render through engine controls that realise them (no festival; flite
voices with F0 controls for emotion).
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechprompt.training import nonspeech
from speechprompt.training import suite_prosody as S
from speechprompt.training import suite_text as T
from speechprompt.training import voices as V
from speechprompt.training.corpus import UtteranceSpec, colored_noise, festival_batch, load_words, tts_to_file
from speechprompt.training.manifest import replace_file, write_csv, write_wav

SR = 16000
SIZES = {"train": 256, "dev": 64, "test": 96, "test_seen": 64, "test_engine": 64}  # clips per split (scale 1)
SPLIT_GROUP = {"train": "seen", "dev": "seen", "test_seen": "seen", "test": "unseen", "test_engine": "engine"}
LID_LANGS = ("en", "de", "fr", "es", "it", "ru")
ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
FLITE_GENDER = {"slt": "female", "kal": "male", "kal16": "male", "awb": "male", "rms": "male"}
# background / noise-class kinds: numbers only. Until 2026-12-03 a fifth kind, 'alsa', mixed in alsa-utils' Noise.wav, a file of
# /usr/share/sounds/alsa, which is a test set (docs/results.md, "The suite's noise"); "generated" (nonspeech.generate) took its place.
NOISE_KINDS = ("white", "pink", "brown", "hum", "generated")


@dataclass(frozen=True)
class TaskDef:
    name: str
    labels: tuple[str, ...]
    lang: str  # language of the speech ("multi" for language ID / VAD)
    mirrors: str  # the paper's dataset this task stands in for
    metric: str = "accuracy"  # "eer" for binary detection


TASKS = {t.name: t for t in (
    TaskDef("commands-en", T.EN_COMMANDS + ("_unknown_", "_silence_"), "en", "Google Speech Commands v1 (12)"),
    TaskDef("commands-nl", tuple(T.NL_COMMANDS), "nl", "Grabo (Dutch robot commands)"),
    TaskDef("commands-lt", tuple(T.LT_COMMANDS), "lt", "Lithuanian Speech Commands"),
    TaskDef("commands-ar", tuple(T.AR_COMMANDS), "ar", "Arabic Speech Commands"),
    TaskDef("intent", tuple(T.INTENTS), "en", "Fluent Speech Commands (action-object-location)"),
    TaskDef("language-id", LID_LANGS, "multi", "VoxForge language ID (6)"),
    TaskDef("accent-en", ACCENTS, "en", "AccentDB (English accents)"),
    TaskDef("gender", ("female", "male"), "en", "VoxCeleb1 gender"),
    TaskDef("question", ("question", "statement"), "en", "prosody (no paper task; cf. sarcasm / emotion)"),
    TaskDef("vad", ("noise", "speech"), "multi", "Speech Commands v2 + Freesound VAD", "eer"),
    TaskDef("rate", S.TASK_LABELS["rate"], "en", "speaking rate (no paper task; prosody: durations)"),
    TaskDef("emotion", S.TASK_LABELS["emotion"], "en",
            "acted emotion (cf. IEMOCAP / CREMA-D; here prosody only: pitch level and range, rate, loudness)"),
)}


@dataclass(frozen=True)
class ClipPlan:
    """One clip to render: ``engine`` is espeak-ng | mbrola | festival | flite | noise."""

    task: str
    split: str
    index: int
    label: str
    engine: str
    voice: str
    lang: str
    text: str
    rate: int
    pitch: int
    snr_db: float | None  # background noise (None: none); VAD speech clips use 0-20 dB
    seed: int
    range_pct: int | None = None  # pitch range, % of the voice's own (prosody tasks; None: untouched)
    gain: tuple[float, float] = (0.3, 0.9)  # final peak level is drawn from this range


@lru_cache(maxsize=None)
def variant_gender() -> dict[str, str]:
    """espeak-ng variant -> 'male' / 'female' where its voice file says so (``gender`` line)."""
    out = {}
    for d in ("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v", "/usr/share/espeak-ng-data/voices/!v"):
        for f in Path(d).glob("*") if Path(d).is_dir() else []:
            for line in f.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].lower() == "gender" and parts[1].lower() in ("male", "female"):
                    out[f.name] = parts[1].lower()
                    break
    return out


def voice_pool(lang: str, group: str, espeak_only: bool = False) -> list[tuple[str, str, str]]:
    """``(engine, voice, text language)`` choices for a language and split group (seen / unseen / engine)."""
    if group == "engine":
        return [("flite", v, "en") for v in V.FLITE_VOICES] if lang == "en" else []
    seen = group == "seen"
    variants = V.CORPUS_ESPEAK_VARIANTS if seen else V.HELD_OUT_ESPEAK_VARIANTS
    bases = (V.CORPUS_ESPEAK_ACCENTS if seen else V.HELD_OUT_ESPEAK_ACCENTS) if lang == "en" else (lang,)
    pool = [("espeak-ng", f"{b}+{v}", lang) for b in bases for v in variants if "whisper" not in v]
    if not espeak_only:
        mb = V.CORPUS_MBROLA if seen else [m for m in V.MBROLA_VOICES if m[0] in V.HELD_OUT_MBROLA]
        pool += [("mbrola", v, x) for v, x in mb if x == lang] * max(1, len(pool) // 20)
        if seen:
            pool += [("festival", v, x) for v, x in V.CORPUS_FESTIVAL if x == lang] * max(1, len(pool) // 40)
    return pool


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _words(rng, lang: str, lo: int, hi: int, ascii_only: bool) -> str:
    words = T.RU_WORDS if lang == "ru" else load_words(lang, ascii_only)
    return " ".join(_pick(rng, words) for _ in range(int(rng.integers(lo, hi + 1))))


def plan_clip(task: TaskDef, split: str, index: int, seed: int) -> ClipPlan | None:
    """Decide label, voice and text of one clip (None when the split has no voice for this task)."""
    rng = np.random.default_rng([seed, zlib.crc32(task.name.encode()), zlib.crc32(split.encode()), index])
    label, group = task.labels[index % len(task.labels)], SPLIT_GROUP[split]
    if group == "engine" and task.lang != "en" and task.name != "vad":
        return None  # flite speaks English only
    lang, snr = ("en" if task.lang == "multi" else task.lang), float(rng.uniform(20, 45))
    if task.name == "language-id":
        lang = label
    elif task.name == "vad":
        lang = "en" if group != "seen" else _pick(rng, ("en", "de", "fr", "es", "it", "nl"))
        snr = float(rng.uniform(0, 20))
    pool = voice_pool(lang, group, espeak_only=task.name in ("accent-en", "gender"))
    if task.name == "accent-en":
        variants = V.CORPUS_ESPEAK_VARIANTS if group == "seen" else V.HELD_OUT_ESPEAK_VARIANTS
        pool = [("espeak-ng", f"{label}+{v}", "en") for v in variants if "whisper" not in v] if group != "engine" else []
    elif task.name == "gender":
        g = variant_gender()
        pool = [p for p in pool if (g.get(p[1].split("+")[-1]) if p[0] == "espeak-ng" else FLITE_GENDER.get(p[1]))
                == label]
    elif task.name in S.STYLES:
        pool = [p for p in pool if S.usable(task.name, p[0], p[1])]
    if not pool:
        return None
    engine, voice, lang = _pick(rng, pool)
    ascii_only = engine == "festival"
    if label in ("_silence_", "noise"):
        engine, voice, text = "noise", _pick(rng, NOISE_KINDS), ""
    elif task.name == "commands-en":
        text = _pick(rng, T.EN_UNKNOWN) if label == "_unknown_" else label
    elif task.name == "commands-nl":
        text = _pick(rng, T.NL_COMMANDS[label])
    elif task.name == "commands-lt":
        text = T.LT_COMMANDS[label]
    elif task.name == "commands-ar":
        text = T.AR_COMMANDS[label]
    elif task.name == "intent":
        text = _pick(rng, T.INTENTS[label])
    elif task.name == "question":
        text = _pick(rng, T.PROSODY_SENTENCES) + ("?" if label == "question" else ".")
    elif task.name == "emotion":
        text = _pick(rng, T.PROSODY_SENTENCES) + "."
    elif task.name == "rate":
        text = _words(rng, lang, 4, 7, ascii_only)  # enough syllables for a rate; length varies within a class
    else:  # language-id, accent-en, gender, vad speech
        text = _words(rng, lang, 2, 4, ascii_only)  # ~1-2 s: keeps unit sequences (and training) short
    if task.name in S.STYLES:
        rate, pitch, range_pct, gain = S.style(task.name, label, rng)
        return ClipPlan(task.name, split, index, label, engine, voice, lang, text, rate, pitch, snr,
                        int(rng.integers(2**31)), range_pct, gain)
    rate, pitch = int(rng.integers(130, 210)), int(rng.integers(30, 70) if task.name == "gender" else rng.integers(20, 80))
    return ClipPlan(task.name, split, index, label, engine, voice, lang, text, rate, pitch, snr,
                    int(rng.integers(2**31)))


def _noise(rng, kind: str, n: int) -> np.ndarray:
    if kind == "hum":
        t = np.arange(n) / SR
        f0 = _pick(rng, (50.0, 60.0))
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 6))
        x = x + 0.3 * colored_noise(rng, n, "pink")
    elif kind == "generated":  # tones, DTMF, sweeps, synthesizer music, drums, clicks, machines (one draw of rng)
        x = np.resize(nonspeech.generate(1, int(rng.integers(2**31)))[1], n)
    else:
        x = colored_noise(rng, n, kind if kind in ("white", "pink", "brown") else "white")
    return (x / (np.max(np.abs(x)) + 1e-9)).astype(np.float32)


def _finish(plan: ClipPlan, wav_path: str | None) -> np.ndarray:
    rng = np.random.default_rng(plan.seed)
    if wav_path is None:  # noise-only clip: 0.8-2.5 s of noise at a random level
        n = int(SR * rng.uniform(0.8, 2.5))
        return (_noise(rng, plan.voice, n) * rng.uniform(0.005, 0.5)).astype(np.float32)
    y, sr = sf.read(wav_path, dtype="float32")
    y = soxr.resample(y if y.ndim == 1 else y.mean(1), sr, SR)
    y = y / (np.max(np.abs(y)) + 1e-9) * rng.uniform(*plan.gain)
    y = np.concatenate([np.zeros(int(SR * rng.uniform(0.02, 0.3))), y, np.zeros(int(SR * rng.uniform(0.02, 0.3)))])
    if plan.snr_db is not None:  # background noise scaled to the clip's SNR (power ratio, dB)
        nz = _noise(rng, _pick(rng, NOISE_KINDS), len(y))
        gain = np.sqrt(np.mean(y**2) / 10 ** (plan.snr_db / 10) / (np.mean(nz**2) + 1e-12))
        y = y + gain * nz
    return np.clip(y, -1, 1).astype(np.float32)


def _render(job: tuple[list[ClipPlan], str]) -> list[tuple[ClipPlan, str]]:
    """Worker: synthesize and write a batch of clips (festival batches share one voice)."""
    plans, out = job
    done = []
    with tempfile.TemporaryDirectory(prefix="sp_suite_") as tmp:
        specs = [UtteranceSpec(i, p.engine, p.voice, p.lang, p.text, p.rate, p.pitch) for i, p in enumerate(plans)]
        paths: list[str | None]
        if plans[0].engine == "festival":
            paths = festival_batch(specs, tmp)
        else:
            paths = []
            for s, p in zip(specs, plans, strict=True):
                if p.engine == "noise":
                    paths.append(None)
                    continue
                paths.append(os.path.join(tmp, f"{s.index}.wav"))
                if p.task in S.STYLES:
                    S.synthesize(s, p.range_pct, paths[-1])
                else:
                    tts_to_file(s, paths[-1])
        for p, path in zip(plans, paths, strict=True):
            rel = f"clips/{p.split}/{p.label}/{p.index:05d}.wav"
            f = Path(out) / p.task / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            write_wav(f, _finish(p, path), SR)
            done.append((p, rel))
    return done


def make_suite(out: str | os.PathLike, tasks: list[str] | None = None, scale: float = 1.0, seed: int = 0,
               jobs: int = 2, progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate the suite (or ``tasks``) under ``out``; ``scale`` multiplies :data:`SIZES`.

    Returns the summary also written to ``out/suite.json``. ``progress(done, total)`` after every batch.
    Raises ``KeyError`` for an unknown task and ``corpus.CorpusError`` when a TTS engine fails.
    """
    names = list(TASKS) if not tasks else tasks
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise KeyError(f"unknown suite tasks {unknown}; known: {list(TASKS)}")
    plans = []
    for name in names:
        td = TASKS[name]
        for split, size in SIZES.items():
            n = max(len(td.labels), int(round(size * scale / len(td.labels))) * len(td.labels))
            plans += [p for i in range(n) if (p := plan_clip(td, split, i, seed)) is not None]
    groups: dict[str, list[ClipPlan]] = {}
    for p in plans:
        groups.setdefault(f"festival:{p.voice}" if p.engine == "festival" else "tts", []).append(p)
    batches = [(g[i : i + 32], str(out)) for g in groups.values() for i in range(0, len(g), 32)]
    rows: dict[str, list] = {n: [] for n in names}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        for part in pool.map(_render, batches):
            for p, rel in part:
                rows[p.task].append((p, rel))
            if progress:
                progress(sum(len(r) for r in rows.values()), len(plans))
    summary = {"seed": seed, "scale": scale, "sample_rate": SR, "tasks": {}}
    for name, items in rows.items():
        items.sort(key=lambda x: (list(SIZES).index(x[0].split), x[0].index))
        write_csv(Path(out) / name / "manifest.csv", [[rel, p.label, p.split, p.engine, p.voice] for p, rel in items],
                  header=["path", "label", "split", "engine", "voice"])
        counts = {s: sum(1 for p, _ in items if p.split == s) for s in SIZES}
        summary["tasks"][name] = {**asdict(TASKS[name]), "splits": {s: c for s, c in counts.items() if c}}
    replace_file(Path(out, "suite.json"), (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode())
    return summary
