"""Synthesized multilingual speech corpus for the default backbone: TTS + deterministic augmentation.

``[plan_corpus(minutes, seed)] -> specs -> synthesize_corpus(specs) -> Corpus(clean [N_i] f32, noisy [N_i] f32)``

Each utterance is 4-9 random words of one language (Debian word lists, ``voices.WORDLISTS``) spoken by one
engine/voice of ``voices.CORPUS_*`` (espeak-ng with its accents and voice variants, MBROLA diphone voices through
espeak-ng, festival diphone voices) at a random rate and pitch, resampled to 16 kHz mono and speed-perturbed
(sox ``speed``: tempo and pitch together, as in Kaldi's 0.9/1.0/1.1 recipe). Its *noisy* twin has the same
length and alignment: sox ``pitch`` (cents; duration kept), optional ``reverb``, optional telephone band
(``sinc 300-3400`` + 8 kHz round trip), then additive coloured noise at a random SNR. The HuBERT trainer feeds
the noisy twin and predicts targets computed on the clean one, so invariance to pitch and channel is learned.

Every random choice comes from ``numpy.random.default_rng([seed, index])``; sox runs with ``-R`` (repeatable
dither). Needs the Debian packages of ``scripts/install_tts.sh``; raises ``CorpusError`` when an engine fails.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from speechprompt.training import voices

SAMPLE_RATE = 16000
ENGINE_SHARES = (("espeak-ng", 0.5), ("mbrola", 0.33), ("festival", 0.17))
MEAN_UTTERANCE_S = 4.0  # measured average of the planned utterances (used to size the plan)


class CorpusError(RuntimeError):
    """A TTS engine or sox failed (message has the command and its stderr)."""


@dataclass(frozen=True)
class UtteranceSpec:
    """One planned utterance: what to say, who says it, and how it is perturbed."""

    index: int
    engine: str          # "espeak-ng" | "mbrola" | "festival" | "flite" | "piper"
    voice: str           # espeak voice (e.g. "en-us+f3", "mb-us1"), festival voice, flite voice
    lang: str
    text: str
    rate: int = 175      # espeak words per minute (ignored by festival/flite)
    pitch: int = 50      # espeak pitch 0-99
    speed: float = 1.0   # sox speed factor (clean signal)
    aug: dict = field(default_factory=dict)  # pitch_cents, reverb, telephone, snr_db, noise_color, gain


@dataclass
class Corpus:
    """Synthesized clips: ``clean[i]`` and ``noisy[i]`` are float32 ``[N_i]`` at 16 kHz, equal lengths."""

    specs: list[UtteranceSpec]
    clean: list[np.ndarray]
    noisy: list[np.ndarray]

    @property
    def seconds(self) -> float:
        return float(sum(len(x) for x in self.clean)) / SAMPLE_RATE


@lru_cache(maxsize=None)
def load_words(lang: str, ascii_only: bool = False) -> tuple[str, ...]:
    """Words of a Debian word list: lowercase, alphabetic, 2-12 letters (sorted, deduplicated)."""
    path = voices.WORDLISTS[lang]
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # wswedish, wnorwegian ship ISO-8859-1
        text = raw.decode("latin-1")
    words = {w.strip() for w in text.splitlines()}
    keep = sorted(w for w in words if w.isalpha() and w.islower() and 2 <= len(w) <= 12
                  and (not ascii_only or w.isascii()))
    if not keep:
        raise CorpusError(f"no usable words in {path}")
    return tuple(keep)


def random_text(rng: np.random.Generator, lang: str, ascii_only: bool = False) -> str:
    """4-9 random words of ``lang``."""
    words = load_words(lang, ascii_only)
    n = int(rng.integers(4, 10))
    return " ".join(words[int(i)] for i in rng.integers(0, len(words), n))


def random_aug(rng: np.random.Generator) -> dict:
    """Augmentation parameters of the noisy twin."""
    return {
        "pitch_cents": int(rng.integers(-400, 401)),
        "reverb": int(rng.integers(10, 90)) if rng.random() < 0.4 else 0,
        "telephone": bool(rng.random() < 0.25),
        "snr_db": float(rng.uniform(3.0, 30.0)) if rng.random() < 0.7 else None,
        "noise_color": str(rng.choice(["white", "pink", "brown"])),
        "gain": float(rng.uniform(0.2, 0.95)),
    }


VALID_EVERY = 40  # utterance i is in the validation split when i % VALID_EVERY == VALID_EVERY - 1


def is_valid(index: int) -> bool:
    """Validation utterances never enter any training step (unit LM perplexity is measured on them)."""
    return index % VALID_EVERY == VALID_EVERY - 1


def plan_utterance(seed: int, i: int, languages: tuple[str, ...] = voices.CORPUS_LANGUAGES) -> UtteranceSpec:
    """Utterance ``i`` of the corpus of ``seed`` (depends on nothing else, so any corpus size shares it)."""
    rng = np.random.default_rng([seed, i])
    engines, shares = zip(*ENGINE_SHARES)
    engine = str(rng.choice(engines, p=np.array(shares) / sum(shares)))
    rate, pitch = int(rng.integers(120, 230)), int(rng.integers(15, 85))
    if engine == "espeak-ng":
        if rng.random() < 0.4:
            lang, base = "en", str(rng.choice(voices.CORPUS_ESPEAK_ACCENTS))
        else:
            lang = str(rng.choice([x for x in languages if x != "en"]))
            base = lang
        variant = "" if rng.random() < 0.15 else "+" + str(rng.choice(voices.CORPUS_ESPEAK_VARIANTS))
        voice, ascii_only = base + variant, False
    elif engine == "mbrola":
        voice, lang = voices.CORPUS_MBROLA[int(rng.integers(len(voices.CORPUS_MBROLA)))]
        ascii_only, rate = False, int(rng.integers(120, 200))
    else:
        voice, lang = voices.CORPUS_FESTIVAL[int(rng.integers(len(voices.CORPUS_FESTIVAL)))]
        ascii_only = True  # festival diphone voices read 8-bit text
    speed = float(rng.choice([0.9, 1.0, 1.1]))
    return UtteranceSpec(i, engine, voice, lang, random_text(rng, lang, ascii_only), rate, pitch, speed,
                         random_aug(rng))


def plan_corpus(minutes: float, seed: int) -> list[UtteranceSpec]:
    """Deterministic plan of about ``minutes`` of speech from the corpus voices (never the held-out ones);
    includes the validation utterances (``is_valid``)."""
    n = max(1, int(round(minutes * 60.0 / MEAN_UTTERANCE_S)))
    return [plan_utterance(seed, i) for i in range(n)]


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    p = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if p.returncode != 0:
        raise CorpusError(f"{' '.join(cmd[:6])}... failed ({p.returncode}): {p.stderr[-400:]!r}")
    return p.stdout


RAW = ["-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-e", "floating-point", "-b", "32"]


def to_16k(wav_path: str, speed: float) -> np.ndarray:
    """sox: any wav -> float32 ``[N]`` 16 kHz mono, speed-perturbed."""
    effects = (["speed", f"{speed:.3f}"] if speed != 1.0 else []) + ["rate", "-h", str(SAMPLE_RATE)]
    out = _run(["sox", "-R", "-V1", wav_path, *RAW, "-", "remix", "-", *effects])
    return np.frombuffer(out, dtype=np.float32).copy()


def colored_noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    """White / pink (1/f) / brown (1/f^2) noise ``[n]`` f32 with unit RMS."""
    white = rng.standard_normal(n)
    if color != "white":
        spec = np.fft.rfft(white)
        f = np.maximum(np.arange(len(spec)), 1.0)
        spec = spec / (np.sqrt(f) if color == "pink" else f)
        white = np.fft.irfft(spec, n)
    return (white / (np.sqrt(np.mean(white ** 2)) + 1e-12)).astype(np.float32)


def augment(clean: np.ndarray, aug: dict, seed: int, index: int) -> np.ndarray:
    """The noisy twin of ``clean`` ``[N]`` f32 (same length): pitch, reverb, telephone band, noise."""
    effects = ["pitch", str(aug["pitch_cents"])]
    if aug["reverb"]:
        effects += ["reverb", str(aug["reverb"])]
    if aug["telephone"]:
        effects += ["sinc", "300-3400", "rate", "-h", "8000", "rate", "-h", str(SAMPLE_RATE)]
    out = _run(["sox", "-R", "-V1", *RAW, "-", *RAW, "-", *effects], stdin=clean.astype(np.float32).tobytes())
    y = np.frombuffer(out, dtype=np.float32)
    y = np.pad(y[: len(clean)], (0, max(0, len(clean) - len(y))))
    if aug["snr_db"] is not None:
        rng = np.random.default_rng([seed, index, 7])
        p_sig = float(np.mean(y ** 2)) + 1e-10
        y = y + colored_noise(rng, len(y), aug["noise_color"]) * np.sqrt(p_sig / 10 ** (aug["snr_db"] / 10))
    return y.astype(np.float32)


def normalise(x: np.ndarray, gain: float) -> np.ndarray:
    """Peak-normalise to ``gain`` (0-1)."""
    return (x * (gain / (np.max(np.abs(x)) + 1e-9))).astype(np.float32)


def tts_to_file(spec: UtteranceSpec, path: str) -> None:
    """Synthesize one espeak-ng / MBROLA / flite utterance to a wav file (festival: ``festival_batch``)."""
    if spec.engine == "espeak-ng":
        _run(["espeak-ng", "-v", spec.voice, "-s", str(spec.rate), "-p", str(spec.pitch), "-w", path, spec.text])
    elif spec.engine == "mbrola":
        # espeak-ng writes the phonemes, mbrola renders them: espeak-ng's own mbrola pipe (mbrowrap) gives
        # timing-dependent output when several syntheses run at once (measured: 1 clip in 60 differed).
        pho = _run(["espeak-ng", "-v", spec.voice, "-s", str(spec.rate), "-p", str(spec.pitch), "-q", "--pho",
                    spec.text])
        db = spec.voice.split("-")[1]  # mb-de1-en -> de1
        _run(["mbrola", "-e", f"/usr/share/mbrola/{db}/{db}", "-", path], stdin=pho)
    elif spec.engine == "flite":
        _run(["flite", "-voice", spec.voice, "-t", spec.text, "-o", path])
    elif spec.engine == "piper":
        os.replace(piper_batch([spec], os.path.dirname(path) or ".")[0], path)
    else:
        raise CorpusError(f"engine {spec.engine!r} is synthesized in batches")


def festival_batch(specs: list[UtteranceSpec], tmp: str) -> list[str]:
    """One festival process for utterances of one voice; returns the wav paths."""
    lines, paths = [f"(voice_{specs[0].voice})"], []
    for s in specs:
        path = os.path.join(tmp, f"fest{s.index}.wav")
        text = s.text.replace("\\", " ").replace('"', " ")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
        paths.append(path)
    script = os.path.join(tmp, "batch.scm")
    with open(script, "w", encoding="latin-1", errors="replace") as f:
        f.write("\n".join(lines) + "\n")
    _run(["festival", "--batch", script])
    return paths


def piper_batch(specs: list[UtteranceSpec], tmp: str) -> list[str]:
    """Piper (neural, onnxruntime) for utterances of one voice of ``voices.PIPER_VOICES``; returns wav paths.

    Sampling noise is off (``noise_scale`` = ``noise_w_scale`` = 0) so the audio is deterministic; speaking rate
    follows ``spec.rate`` (175 wpm = the voice's own rate). Needs PyPI ``piper-tts`` and the voice's package.
    """
    import importlib
    import wave

    try:
        from piper import PiperVoice, SynthesisConfig
        pkg, model = voices.PIPER_VOICES[specs[0].voice]
        root = os.path.dirname(importlib.import_module(pkg).__file__)
    except (ImportError, KeyError) as e:
        raise CorpusError(f"piper voice {specs[0].voice!r} unavailable: {e}") from None
    voice = PiperVoice.load(os.path.join(root, "data", model))
    paths = []
    for s in specs:
        path = os.path.join(tmp, f"piper{s.index}.wav")
        cfg = SynthesisConfig(length_scale=175.0 / max(s.rate, 1), noise_scale=0.0, noise_w_scale=0.0)
        with wave.open(path, "wb") as w:
            voice.synthesize_wav(s.text, w, cfg)
        paths.append(path)
    return paths


def _finish(spec: UtteranceSpec, wav: str, seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    clean = normalise(to_16k(wav, spec.speed), spec.aug["gain"])
    if len(clean) < 800:
        raise CorpusError(f"utterance {spec.index} ({spec.voice}) is shorter than 50 ms")
    noisy = np.clip(augment(clean, spec.aug, seed, spec.index), -1.0, 1.0)
    return spec.index, clean, noisy


def _work(job: tuple[list[UtteranceSpec], int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    specs, seed = job
    out = []
    with tempfile.TemporaryDirectory(prefix="sp_corpus_") as tmp:
        if specs[0].engine in ("festival", "piper"):
            batch = festival_batch if specs[0].engine == "festival" else piper_batch
            for s, wav in zip(specs, batch(specs, tmp)):
                out.append(_finish(s, wav, seed))
        else:
            for s in specs:
                wav = os.path.join(tmp, "u.wav")
                tts_to_file(s, wav)
                out.append(_finish(s, wav, seed))
    # int16 halves what crosses the process boundary; converted back in synthesize_corpus
    return [(i, (c * 32767).astype(np.int16), (n * 32767).astype(np.int16)) for i, c, n in out]


def synthesize_corpus(specs: list[UtteranceSpec], seed: int, jobs: int = 2, chunk: int = 40) -> Corpus:
    """Run every spec (``jobs`` worker processes); result order = spec order, independent of ``jobs``."""
    batches: list[list[UtteranceSpec]] = []
    by_key: dict[str, list[UtteranceSpec]] = {}
    for s in specs:
        by_key.setdefault(f"{s.engine}:{s.voice}" if s.engine in ("festival", "piper") else "tts", []).append(s)
    for group in by_key.values():
        batches += [group[i:i + chunk] for i in range(0, len(group), chunk)]
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if jobs <= 1:
        done = map(_work, [(b, seed) for b in batches])
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        done = pool.map(_work, [(b, seed) for b in batches])
    for part in done:
        for i, c, n in part:
            results[i] = (c.astype(np.float32) / 32767, n.astype(np.float32) / 32767)
    if jobs > 1:
        pool.shutdown()
    return Corpus(list(specs), [results[s.index][0] for s in specs], [results[s.index][1] for s in specs])


def synthesize_words(words: list[str], voice_specs: list[tuple[str, str]], rate: int = 160) -> dict:
    """Clean single-word clips for evaluation: ``{(word, engine, voice): [N] f32 @16 kHz}``.

    ``voice_specs`` = ``[(engine, voice)]`` with engine espeak-ng / mbrola / festival / flite / piper.
    """
    out = {}
    with tempfile.TemporaryDirectory(prefix="sp_words_") as tmp:
        for engine, voice in voice_specs:
            specs = [UtteranceSpec(i, engine, voice, "en", w, rate, 50, 1.0, {}) for i, w in enumerate(words)]
            if engine in ("festival", "piper"):
                paths = (festival_batch if engine == "festival" else piper_batch)(specs, tmp)
            else:
                paths = []
                for s in specs:
                    p = os.path.join(tmp, f"w{s.index}.wav")
                    tts_to_file(s, p)
                    paths.append(p)
            for w, p in zip(words, paths):
                out[(w, engine, voice)] = normalise(to_16k(p, 1.0), 0.7)
    return out
