"""Official GSLM files -> a backbone bundle; and their download.

Sources (gslm_reference.md section 1): fairseq ``examples/textless_nlp/gslm/speech2unit/README.md`` and
``.../gslm/ulm/README.md``; SpeechPrompt ``GSLM/preprocess/model_downloader.py``; textlesslib checkpoint manager.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backbone import save_bundle
from ..backbone import sha256_file as sha256_of
from .checkpoint import CheckpointError
from .hubert import load_fairseq_hubert
from .unit_lm import import_unit_lm, is_padding_word

BASE = "https://dl.fbaipublicfiles.com"


@dataclass(frozen=True)
class Remote:
    """One official file: URL, local name, and the sha256 prefix/suffix published by textlesslib (if any)."""

    url: str
    name: str
    sha256_prefix: str = ""
    sha256_suffix: str = ""


def gslm_files(units: int = 100) -> list[Remote]:
    """HuBERT base (LibriSpeech 960 h), the k-means codebook and the unit LM for ``units`` in 50/100/200."""
    if units not in (50, 100, 200):
        raise ValueError(f"GSLM HuBERT unit LMs exist for 50, 100 and 200 units, not {units}")
    km = Remote(f"{BASE}/textless_nlp/gslm/hubert/km{units}/km.bin", "km.bin",
                *(("f14a3104", "1023fe") if units == 100 else ("", "")))
    return [Remote(f"{BASE}/hubert/hubert_base_ls960.pt", "hubert_base_ls960.pt", "1703cf8d2cdc76f8", "c8c8d"), km,
            Remote(f"{BASE}/textless_nlp/gslm/hubert/lm_km{units}/hubert{units}_lm.tgz", f"hubert{units}_lm.tgz")]


def verify(path: Path, remote: Remote) -> str:
    """Check the published digest fragments; returns the full sha256. Raises ``CheckpointError`` on mismatch."""
    digest = sha256_of(path)
    if not (digest.startswith(remote.sha256_prefix) and digest.endswith(remote.sha256_suffix)):
        raise CheckpointError(f"{path} has sha256 {digest}, expected {remote.sha256_prefix}...{remote.sha256_suffix}")
    return digest


def download(remote: Remote, dest: Path, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Stream ``remote`` to ``dest/name`` (resumable via ``.part``, atomic rename, digest checked)."""
    import httpx

    dest.mkdir(parents=True, exist_ok=True)
    final, part = dest / remote.name, dest / (remote.name + ".part")
    if final.exists():
        verify(final, remote)
        return final
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    with httpx.stream("GET", remote.url, headers=headers, follow_redirects=True, timeout=60) as r:
        r.raise_for_status()
        if r.status_code != 206:
            start = 0
        total = int(r.headers.get("content-length", 0)) + start or None
        with open(part, "ab" if start else "wb") as f:
            done = start
            for chunk in r.iter_bytes(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    verify(part, remote)
    os.replace(part, final)
    return final


def extract_lm(tgz: Path, dest: Path) -> tuple[Path, Path]:
    """Unpack ``hubertN_lm.tgz`` safely (tarfile ``data`` filter) -> (checkpoint_best.pt, dict.txt)."""
    with tarfile.open(tgz) as tar:
        tar.extractall(dest, filter="data")
    ckpt = next(dest.rglob("checkpoint_best.pt"), None)
    dct = next(dest.rglob("dict.txt"), None)
    if ckpt is None or dct is None:
        raise CheckpointError(f"{tgz} does not contain checkpoint_best.pt and dict.txt")
    return ckpt, dct


def import_gslm(hubert: Path, km_bin: Path, lm_checkpoint: Path, dict_txt: Path, out: Path, *, layer: int = 6,
                name: str = "gslm-hubert100") -> str:
    """Convert the official files into a bundle at ``out``; returns its fingerprint.

    ``km.bin`` is an sklearn pickle: only its centroids ``[K, 768]`` are kept, and only here (an operator-chosen file).
    """
    from ..codebook import load_kmeans_centroids

    enc_cfg, enc_sd = load_fairseq_hubert(hubert, output_layer=layer)
    centroids = load_kmeans_centroids(km_bin)
    lm_cfg, lm_sd, dictionary = import_unit_lm(lm_checkpoint, dict_txt)
    units = [t for t in dictionary[4:] if not is_padding_word(t)]  # madeupwordNNNN: never a unit's token
    if len(units) != centroids.shape[0]:
        raise CheckpointError(f"unit LM dictionary has {len(units)} units (plus {len(dictionary) - 4 - len(units)} "
                              f"padding words) but km.bin has {centroids.shape[0]}")
    if centroids.shape[1] != enc_cfg.embed_dim:
        raise CheckpointError(f"km.bin centroids are {centroids.shape[1]}-d but HuBERT features are {enc_cfg.embed_dim}-d")
    extra = {"source": "official GSLM", "files": {p.name: sha256_of(p) for p in (hubert, km_bin, lm_checkpoint, dict_txt)}}
    return save_bundle(out, kind="gslm", name=name, encoder_cfg=enc_cfg, encoder_state=enc_sd, centroids=centroids,
                       lm_cfg=lm_cfg, lm_state=lm_sd, dictionary=dictionary, extra=extra)
