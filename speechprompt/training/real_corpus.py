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

import json
import random
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

# the allow-list, fetching and licences (real_packages) and the per-package collectors (real_sources), re-exported
from .real_packages import (  # noqa: F401
    ALLOWED_PACKAGES,
    DECODERS,
    DEFAULT_CACHE,
    SAMPLE_RATE,
    BuildReport,
    Clip,
    NotAllowedError,
    Progress,
    RealCorpusError,
    _marker,
    check_allowed,
    copyright_path,
    dep5_license,
    extracted_root,
    fetch_package,
)
from .real_sources import COLLECTORS, collect  # noqa: F401

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
