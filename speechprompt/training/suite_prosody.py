"""Prosody tasks of the suite: speaking rate and an emotion-like style, and the TTS controls that make them.

Only prosody distinguishes the classes (the text and the voices are drawn independently of the label):

- ``rate``: slow / normal / fast speech of 4-7 random English words (espeak-ng words per minute).
- ``emotion``: neutral / happy / sad / angry, each a region of (pitch level, pitch range, rate, loudness) in the
  spirit of acted-emotion corpora (happy: high, wide, fast-ish; sad: low, narrow, slow, quiet; angry: mid-high,
  wide, fast, loud); the sentence is one of the ``question`` task's statements. The ranges overlap a little.

How each engine is controlled (each measured with the repo's YAAPT ``prosody.frame_f0`` on the rendered audio):

- espeak-ng: ``-s`` words per minute, ``-p`` pitch level (0-99, shifts the whole contour), and the pitch RANGE with
  SSML ``<prosody range="N%">`` (``-m``; espeak-ng maps it onto its range parameter, 100% = the voice's own, capped
  at 200%). en-us+m3, log-F0 s.d. over voiced frames: 0.061 at 20%, 0.081 at 50%, 0.112 at 100%, 0.150 at 150%,
  0.194 at 200% (and at 300%: the cap).
- MBROLA (espeak-ng ``--pho`` then ``mbrola``): ``-s`` and ``-p`` reach the phoneme file, SSML prosody does not (the
  pitch targets are identical for every range); the range is applied to the pitch targets of the ``.pho`` file
  instead, scaling log-F0 about the utterance mean by ``N/100`` (a voice-file ``pitch`` line would also work, in a
  private espeak-ng data path, but changes level and range together).
- flite (held-out engine): ``duration_stretch`` = 175 / wpm; pitch level and range through ``int_f0_target_mean``
  and ``int_f0_target_stddev`` around each voice's own values (kal, kal16: 95 / 11 Hz, the values that reproduce the
  default output bit for bit; awb, slt: s.d. 25 / 27 Hz bit-exact, means measured with YAAPT). ``rms`` ignores the F0
  targets, so it only speaks ``rate`` clips. festival is not used for these tasks (the suite's festival path
  ignores rate and pitch).
- loudness: every suite clip is peak-normalised to a random level, so the engines' amplitude controls would be
  undone; the class sets the range of that final level instead.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from speechprompt.training.corpus import CorpusError, UtteranceSpec, _run

TASK_LABELS = {"rate": ("slow", "normal", "fast"), "emotion": ("neutral", "happy", "sad", "angry")}

# label -> (rate wpm [lo, hi), pitch level [lo, hi), range % [lo, hi) or None, final peak level (lo, hi))
STYLES: dict[str, dict[str, tuple]] = {
    "rate": {
        "slow": ((90, 121), (20, 80), None, (0.3, 0.9)),
        "normal": ((150, 186), (20, 80), None, (0.3, 0.9)),
        "fast": ((230, 291), (20, 80), None, (0.3, 0.9)),
    },
    "emotion": {
        "neutral": ((150, 181), (42, 59), (85, 116), (0.35, 0.65)),
        "happy": ((175, 211), (62, 81), (150, 201), (0.5, 0.85)),
        "sad": ((110, 141), (22, 39), (20, 51), (0.15, 0.4)),
        "angry": ((200, 241), (45, 63), (120, 171), (0.65, 0.95)),
    },
}
FLITE_F0 = {"kal": (95.0, 11.0), "kal16": (95.0, 11.0), "awb": (129.0, 25.0), "slt": (169.0, 27.0)}  # mean, sd Hz
FLITE_RATE_WPM = 175.0  # duration_stretch = FLITE_RATE_WPM / rate


def style(task: str, label: str, rng) -> tuple[int, int, int | None, tuple[float, float]]:
    """Draw one clip's (rate wpm, pitch level 0-99, pitch range % or None, peak-level range) for its class."""
    (r0, r1), (p0, p1), rng_pct, gain = STYLES[task][label]
    rate, pitch = int(rng.integers(r0, r1)), int(rng.integers(p0, p1))
    return rate, pitch, None if rng_pct is None else int(rng.integers(*rng_pct)), gain


def usable(task: str, engine: str, voice: str) -> bool:
    """Whether ``engine``/``voice`` can render this task's prosody (no festival; flite F0 voices for emotion)."""
    if engine == "festival":
        return False
    return engine != "flite" or task == "rate" or voice in FLITE_F0


def scale_pho_range(pho: str, range_pct: int) -> str:
    """MBROLA phoneme file with every pitch target's log-F0 scaled about the mean log-F0 by ``range_pct / 100``.

    Lines are ``phoneme duration_ms [position_% f0_Hz]...``; ``;`` comments and other lines are kept as they are.
    """
    rows = [ln.split() for ln in pho.splitlines()]
    logs = [math.log(float(f)) for r in rows if len(r) > 3 and not r[0].startswith(";") for f in r[3::2]]
    if not logs:
        return pho
    mean, k = sum(logs) / len(logs), range_pct / 100.0
    out = []
    for ln, r in zip(pho.splitlines(), rows):
        if len(r) > 3 and not r[0].startswith(";"):
            r[3::2] = [str(round(math.exp(mean + k * (math.log(float(f)) - mean)))) for f in r[3::2]]
            ln = " ".join(r)
        out.append(ln)
    return "\n".join(out) + "\n"


def synthesize(spec: UtteranceSpec, range_pct: int | None, path: str) -> None:
    """Render one styled clip to a wav file: ``spec.rate`` (wpm), ``spec.pitch`` (level 0-99) and ``range_pct``
    (pitch range, % of the voice's own; None = the voice's own, no SSML) on espeak-ng / mbrola / flite.

    Raises :class:`corpus.CorpusError` for another engine or a failing tool.
    """
    text = spec.text
    if spec.engine in ("espeak-ng", "mbrola"):
        args = ["espeak-ng", "-v", spec.voice, "-s", str(spec.rate), "-p", str(spec.pitch)]
        if spec.engine == "espeak-ng":
            if range_pct is not None:
                args.append("-m")
                text = f'<speak><prosody range="{range_pct}%">{escape(text)}</prosody></speak>'
            _run([*args, "-w", path, text])
            return
        pho = _run([*args, "-q", "--pho", text]).decode()
        if range_pct is not None:
            pho = scale_pho_range(pho, range_pct)
        db = spec.voice.split("-")[1]  # mb-us3 -> us3
        _run(["mbrola", "-e", f"/usr/share/mbrola/{db}/{db}", "-", path], stdin=pho.encode())
    elif spec.engine == "flite":
        args = ["flite", "-voice", spec.voice, "--setf", f"duration_stretch={FLITE_RATE_WPM / spec.rate:.3f}"]
        if spec.voice in FLITE_F0:
            mean, sd = FLITE_F0[spec.voice]
            args += ["--setf", f"int_f0_target_mean={mean * math.exp((spec.pitch - 50) / 100):.1f}",
                     "--setf", f"int_f0_target_stddev={sd * (100 if range_pct is None else range_pct) / 100:.1f}"]
        _run([*args, "-t", text, "-o", path])
    else:
        raise CorpusError(f"engine {spec.engine!r} has no prosody controls here")


__all__ = ["FLITE_F0", "STYLES", "TASK_LABELS", "scale_pho_range", "style", "synthesize", "usable"]
