"""Shared pieces of the pGSLM and prosody parity tests (``test_prosody.py``, ``test_pgslm.py``,
``test_default_pgslm.py``): espeak-ng clips, synthetic units with F0, fairseq's pGSLM example modules, tiny fairseq
``transformer_ulm`` models built through fairseq's own options/tasks API, and fairseq ``CodeDataset`` batches."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprompt.importers.checkpoint import load_fairseq_checkpoint
from speechprompt.importers.pgslm import convert_pgslm
from speechprompt.pgslm import MultiStreamUnitLM
from speechprompt.prosody import F0Stats, Prosody, ProsodyConfig, ProsodyUnits

K, BINS, FP = 20, 32, "e" * 64
TINY = ["--decoder-layers", "2", "--decoder-embed-dim", "32", "--decoder-input-dim", "32", "--decoder-output-dim", "32",
        "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "4", "--share-decoder-input-output-embed",
        "--log-f0", "--normalize-f0-mean"]
VARIANTS = {  # flags, legacy args checkpoint
    "discrete_prosody_1_1": (["--discrete-duration", "--discrete-f0", "--stream-shifts", "1,1"], False),
    "continuous_no_prosody_1_1": (["--stream-shifts", "1,1", "--interpolate-f0", "--ignore-duration-input",
                                   "--ignore-f0-input"], False),
    "mixed_2_1_gelu_learned_legacy": (["--discrete-duration", "--stream-shifts", "2,1", "--activation-fn", "gelu",
                                       "--decoder-learned-pos"], True),
}


def data_config(folder: Path, bins_path: Path | None = None, manifest: Path | None = None) -> Path:
    """The ``data_config.json`` that ``speech_unit_modeling`` reads (``prepare_data.sh`` layout)."""
    path = folder / "data_config.json"
    path.write_text(json.dumps({"manifests": {"train": str(manifest or folder / "train.txt")}, "n_units": K,
                                "code_hop_size": 320, "sampling_rate": 16000, "multispkr": "parent_parent_name",
                                "f0_vq_type": "naive", "f0_vq_naive_quantizer": {"log_mean_norm": str(bins_path)},
                                "f0_vq_n_units": BINS}))
    return path


def build_fairseq_ulm(folder: Path, flags: list[str], seed: int = 0):
    """(args, cfg, model) for ``--arch transformer_ulm`` through fairseq's options/tasks API."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    torch.manual_seed(seed)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data_config(folder)), "--task", "speech_unit_modeling", "--arch", "transformer_ulm", "--criterion",
        "speech_unit_lm_criterion", *TINY, *flags])
    cfg = convert_namespace_to_omegaconf(args)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    with torch.no_grad():  # non-trivial norms; prosody pad rows stay zero as training keeps them
        for n, p in model.named_parameters():
            if "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.2)
    return args, cfg, model.eval()


def ours_from(path: Path):
    cfg, sd, pcfg = convert_pgslm(load_fairseq_checkpoint(path))
    lm = MultiStreamUnitLM(cfg).eval()
    lm.load_state_dict(sd)
    return lm.requires_grad_(False), pcfg


def prosody_for(pcfg: ProsodyConfig) -> Prosody:
    return Prosody(pcfg, edges32() if pcfg.discrete_f0 else None)


def items(lengths: list[int], seed: int = 0) -> list[ProsodyUnits]:
    return [synthetic_units(m, seed + i) for i, m in enumerate(lengths)]


def fairseq_streams(ref, rows):
    with torch.no_grad():
        out = ref(rows.tokens, rows.durations, rows.f0)
    return out["token"], out["duration"], out["f0"]


def speech_clip(folder: Path, text: str = "Is it raining in the city today?", voice: str = "en-us") -> Path:
    """espeak-ng speech (22.05 kHz) resampled by sox to 16 kHz 16-bit PCM, as the pGSLM recipe reads it."""
    raw, out = folder / "raw.wav", folder / "clip16k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-b", "16", str(out)], check=True, capture_output=True)
    return out


def pgslm_data_utils():
    """fairseq ``examples/textless_nlp/pgslm/data_utils.py`` (F0Stat, dump_speaker_f0_stat)."""
    import fairseq

    path = Path(fairseq.__file__).parent / "examples/textless_nlp/pgslm/data_utils.py"
    if not path.is_file():
        pytest.skip("fairseq's pgslm example scripts are not installed")
    spec = importlib.util.spec_from_file_location("pgslm_data_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def synthetic_units(m: int, seed: int, scale: float = 1.0) -> ProsodyUnits:
    """Units with a voiced/unvoiced segment F0 pattern and a frame track whose statistics it carries."""
    g = torch.Generator().manual_seed(seed)
    frames = (120 + 60 * torch.rand(4 * m, generator=g)) * scale
    frames[torch.rand(4 * m, generator=g) < 0.3] = 0
    seg = (110 + 50 * torch.rand(m, generator=g)) * scale
    seg[torch.rand(m, generator=g) < 0.35] = 0
    seg[0] = 0
    d = torch.randint(1, 30, (m,), generator=g)
    return ProsodyUnits(torch.randint(0, 20, (m,), generator=g), d, int(d.sum()), seg.float(),
                        F0Stats.from_frames(frames.float()))


def edges32() -> torch.Tensor:
    return torch.linspace(-0.6, 0.6, 31, dtype=torch.float64)


def codedataset_batch(folder: Path, its: list[ProsodyUnits], speakers: list[str], frame_tracks: list[torch.Tensor],
                      discrete: bool, interpolate: bool, shifts: str, monkeypatch, full: bool = False):
    """Write the files prepare_dataset.py writes and batch them with fairseq's CodeDataset (``full``: the whole
    collated sample with targets and masks, else its ``net_input``)."""
    from fairseq.data.codedataset import CodeDataset, ExpressiveCodeDataConfig
    from fairseq.tasks.speech_ulm_task import UnitDictionary

    du = pgslm_data_utils()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "train.txt"
    eos = K + 2
    np.save(f"{manifest}.code.npy", np.concatenate([np.r_[p.units.numpy(), eos] for p in its]).astype(np.int16))
    np.save(f"{manifest}.dur.npy", np.concatenate([np.r_[p.durations.numpy(), 0] for p in its]).astype(np.int16))
    np.save(f"{manifest}.f0.npy", np.concatenate([np.r_[p.f0.numpy(), 0] for p in its]).astype(np.float32))
    Path(f"{manifest}.leng.txt").write_text("".join(f"{len(p.units) + 1}\n" for p in its))
    Path(f"{manifest}.path.txt").write_text("".join(f"{s}/x/{i}.wav\n" for i, s in enumerate(speakers)))
    Path(f"{manifest}.speaker.txt").write_text("".join(f"{s}\n" for s in speakers))
    stats = {}
    for s in dict.fromkeys(speakers):
        stats[s] = du.F0Stat()
        for spk, track in zip(speakers, frame_tracks):
            if spk == s:
                stats[s].update(track)
    torch.save({s: {"f0_mean": v.mean, "f0_std": v.std, "logf0_mean": v.mean_log, "logf0_std": v.std_log}
                for s, v in stats.items()}, f"{manifest}.f0_stat.pt")
    bins = folder / "bins.th"
    torch.save({BINS: edges32().numpy()}, bins)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # fairseq's own torch.load of numpy edges
    ds = CodeDataset(str(manifest), UnitDictionary(n_units=K),
                     UnitDictionary(n_units=21, clip=True) if discrete else None,
                     UnitDictionary(n_units=BINS) if discrete else None,
                     ExpressiveCodeDataConfig(str(data_config(folder, bins, manifest))), discrete, discrete,
                     log_f0=True, normalize_f0_mean=True, normalize_f0_std=False, interpolate_f0=interpolate,
                     shifts=shifts)
    batch = ds.collater([ds[i] for i in range(len(its))])
    return batch if full else batch["net_input"]
