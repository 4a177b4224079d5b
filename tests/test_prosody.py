"""Prosody streams (pGSLM): F0 per unit segment, statistics, normalisation and quantisation vs fairseq's own code."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from speechprompt.audio import decode_audio
from speechprompt.prosody import (
    F0Stats,
    F0Summary,
    Prosody,
    ProsodyConfig,
    ProsodyError,
    frame_f0,
    peak_normalize,
)
from speechprompt.prosody_file import load_prosody, prosody_bytes, save_prosody
from speechprompt.units import Units
from tests.pgslm_fixtures import edges32, pgslm_data_utils, speech_clip, synthetic_units

HOP, RATIO = 320, 4.0  # HuBERT hop; F0 frames (5 ms) per unit frame (20 ms)


def random_durations(frames: int, seed: int) -> torch.Tensor:
    """Run lengths summing to ``frames``, some longer than pGSLM's cap of 20."""
    g = torch.Generator().manual_seed(seed)
    out, left = [], frames
    while left > 0:
        d = int(torch.randint(1, 30 if len(out) % 7 == 3 else 6, (1,), generator=g))
        out.append(min(d, left))
        left -= out[-1]
    return torch.tensor(out)


def librosa_normalize(S, norm=np.inf, axis=0, threshold=None, fill=None):
    """librosa.util.normalize (librosa/util/utils.py) for its defaults: max-abs norm, tiny threshold, no fill."""
    if threshold is None:
        threshold = np.finfo(S.dtype).tiny
    length = np.max(np.abs(S).astype(float), axis=axis, keepdims=True)
    length[length < threshold] = 1.0
    return S / length


@pytest.fixture()
def fake_librosa(monkeypatch):
    """fairseq's get_f0 imports librosa only for ``normalize``; provide that one function."""
    util = types.ModuleType("librosa.util")
    util.normalize = librosa_normalize
    pkg = types.ModuleType("librosa")
    pkg.util = util
    monkeypatch.setitem(sys.modules, "librosa", pkg)
    monkeypatch.setitem(sys.modules, "librosa.util", util)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = speech_clip(tmp_path_factory.mktemp("clip"))
    samples = decode_audio(path).samples  # f32 @ 16 kHz, what the server has
    frames = (len(samples) - 400) // HOP + 1
    return path, samples, random_durations(frames, 0)


@pytest.mark.fairseq
def test_frame_f0_equals_fairseq_get_f0(clip, fake_librosa):
    import soundfile as sf
    from fairseq.data.codedataset import get_f0

    path, samples, _ = clip
    audio, sr = sf.read(path)  # the recipe's load_wav: float64
    ref = get_f0(audio, rate=sr)
    ours = frame_f0(samples, ProsodyConfig())
    assert np.array_equal(ours, ref)
    voiced = ref[ref > 0]
    assert len(voiced) > 0.3 * len(ref) and 60 < np.median(voiced) < 300  # a real voice was tracked


@pytest.mark.fairseq
def test_segment_f0_and_stats_equal_recipe(clip, fake_librosa):
    from fairseq.data.codedataset import align_f0_to_durations, get_f0_by_filename

    path, samples, durations = clip
    f0 = get_f0_by_filename(str(path), 16000)  # preprocess_f0.py: float32 frame track
    # prepare_dataset.py: durations of the units + the </s> 0, tolerance 5 unit frames
    ref = align_f0_to_durations(f0, torch.cat([durations, torch.zeros(1, dtype=torch.long)]), RATIO, tol=5 * RATIO)
    pu = Prosody(ProsodyConfig(discrete_f0=False)).extract(samples, Units(torch.zeros_like(durations), durations,
                                                                          int(durations.sum())))
    assert isinstance(pu, Units) and pu.f0.dtype == torch.float32
    assert torch.equal(pu.f0, ref[:-1]) and ref[-1] == 0
    assert (pu.f0 > 0).float().mean() > 0.3
    stat = pgslm_data_utils().F0Stat()
    stat.update(f0)
    s = pu.f0_stats.summary()
    assert (s.f0_mean, s.f0_std, s.logf0_mean, s.logf0_std) == (stat.mean.item(), stat.std.item(),
                                                                stat.mean_log.item(), stat.std_log.item())


@pytest.mark.fairseq
@pytest.mark.parametrize("log,mean,std,interp", [(True, True, False, False), (True, True, False, True),
                                                 (True, True, True, True), (False, True, False, False),
                                                 (True, False, False, False)])
def test_normalise_and_quantise_equal_codedataset(log, mean, std, interp):
    from fairseq.data.codedataset import CodeDataset, naive_quantize

    du = pgslm_data_utils()
    pu = synthetic_units(40, 1)
    stat = du.F0Stat()
    stat.update(torch.cat([pu.f0, torch.tensor([130.0, 0, 95.0])]))
    ref_stats = {"f0_mean": stat.mean, "f0_std": stat.std, "logf0_mean": stat.mean_log, "logf0_std": stat.std_log}
    flags = types.SimpleNamespace(interpolate_f0=interp, log_f0=log, normalize_f0_mean=mean, normalize_f0_std=std)
    ref = CodeDataset.preprocess_f0(flags, pu.f0, ref_stats)
    cfg = dict(log_f0=log, normalize_f0_mean=mean, normalize_f0_std=std, interpolate_f0=interp)
    stats = F0Summary(*(v.item() for v in ref_stats.values()))
    cont = Prosody(ProsodyConfig(discrete_f0=False, **cfg)).f0_values(pu, stats)
    assert torch.equal(cont, ref)
    bins = Prosody(ProsodyConfig(**cfg), edges32()).f0_values(pu, stats)
    assert torch.equal(bins, naive_quantize(ref, edges32()))
    assert bins.dtype == torch.long and 0 <= bins.min() and bins.max() <= 31


@pytest.mark.fairseq
def test_duration_cap_equals_unit_dictionary():
    from fairseq.tasks.speech_ulm_task import UnitDictionary

    d = torch.tensor([1, 5, 20, 21, 47, 3, 250])
    ref = UnitDictionary(n_units=21, clip=True).encode_line(" ".join(map(str, d.tolist())), append_eos=False).long()
    assert torch.equal(Prosody(ProsodyConfig(), edges32()).duration_values(d), ref)
    assert torch.equal(Prosody(ProsodyConfig(discrete_duration=False, discrete_f0=False)).duration_values(d),
                       d.float())  # continuous pGSLM durations are not capped


@pytest.mark.fairseq
def test_speaker_statistics_merge_equals_f0stat():
    du = pgslm_data_utils()
    g = torch.Generator().manual_seed(3)
    tracks = [torch.where(torch.rand(n, generator=g) < 0.4, 0.0, 80 + 200 * torch.rand(n, generator=g))
              for n in (300, 57, 1200)]
    stat = du.F0Stat()
    for t in tracks:
        stat.update(t)
    s = F0Stats.merge([F0Stats.from_frames(t) for t in tracks]).summary()
    assert (s.f0_mean, s.f0_std, s.logf0_mean, s.logf0_std) == (stat.mean.item(), stat.std.item(),
                                                                stat.mean_log.item(), stat.std_log.item())


def test_utterance_mean_removes_the_register():
    """Same contour one octave-half higher: speaker-mean inputs move, utterance-mean inputs do not."""
    low, high = synthetic_units(30, 4), synthetic_units(30, 4, scale=1.5)
    p = Prosody(ProsodyConfig(discrete_f0=False))
    assert torch.allclose(p.f0_values(low), p.f0_values(high), atol=1e-5)
    fixed = low.f0_stats.summary()
    assert (p.f0_values(high, fixed) - p.f0_values(low, fixed))[low.f0 > 0].min() > 0.4  # log 1.5 = 0.405
    q = Prosody(ProsodyConfig(), edges32())
    assert (q.f0_values(low) == q.f0_values(high)).float().mean() > 0.9  # bins equal up to edge rounding
    with pytest.raises(ProsodyError, match="speaker"):
        Prosody(ProsodyConfig(discrete_f0=False, normalization="speaker")).f0_values(low)


def test_peak_normalize_follows_librosa():
    x = np.array([0.1, -0.4, 0.2])
    assert np.array_equal(peak_normalize(x), librosa_normalize(x)) and np.abs(peak_normalize(x)).max() == 1.0
    silent = np.zeros(5)
    assert np.array_equal(peak_normalize(silent), librosa_normalize(silent))
    with pytest.raises(ProsodyError, match="NaN"):
        peak_normalize(np.array([0.1, np.nan]))


def test_yin_tracker_follows_a_tone_at_its_frame_spacing():
    t = np.arange(32000) / 16000
    x = sum(np.sin(2 * np.pi * 140 * h * t) / h for h in (1, 2, 3)) * 0.3
    x[:8000] = 0  # 0.5 s of silence first
    f0 = frame_f0(x, ProsodyConfig(f0_tracker="yin", frame_space_ms=20.0))
    assert f0.shape == (101,) and f0.dtype == np.float64  # N // 320 + 1 frames, frame i centred on sample 320 i
    assert (f0[:23] == 0).all()  # silence (frames whose window ends before 0.5 s) is unvoiced
    assert np.allclose(f0[30:98], 140.0, atol=1.0)
    with pytest.raises(ProsodyError, match="f0_tracker"):
        ProsodyConfig(f0_tracker="crepe")


def test_yaapt_failure_leaves_clip_unvoiced(monkeypatch):
    import amfm_decompy.pYAAPT as pYAAPT

    def boom(*a, **k):
        raise IndexError("yaapt internal error")

    monkeypatch.setattr(pYAAPT, "yaapt", boom)
    d = torch.tensor([3, 4])
    pu = Prosody(ProsodyConfig(discrete_f0=False)).extract(np.random.default_rng(0).standard_normal(3000) * 0.1,
                                                           Units(torch.tensor([1, 2]), d, 7))
    assert torch.equal(pu.f0, torch.zeros(2)) and pu.f0_stats.n == 0


def test_f0_and_units_lengths_must_agree(clip):
    _, samples, durations = clip
    d = durations.clone()
    d[-1] += 20  # 20 extra unit frames = 80 F0 frames, beyond the 20-frame tolerance
    with pytest.raises(ProsodyError, match="tolerance"):
        Prosody(ProsodyConfig(discrete_f0=False)).extract(samples, Units(torch.zeros_like(d), d, int(d.sum())))


def test_prosody_file_roundtrip(tmp_path):
    speakers = {"1272": F0Summary(120.5, 20.25, 4.78, 0.17), "84": F0Summary(210.0, 31.0, 5.33, 0.15)}
    p = Prosody(ProsodyConfig(interpolate_f0=True), edges32(), speakers)
    save_prosody(p, tmp_path / "prosody.safetensors")
    q = load_prosody(tmp_path / "prosody.safetensors")
    assert q.config == p.config and torch.equal(q.f0_bin_edges, p.f0_bin_edges) and q.speakers == speakers
    assert prosody_bytes(q) == prosody_bytes(p)  # deterministic bytes -> stable backbone fingerprint
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ProsodyError):
        load_prosody(tmp_path / "bad.safetensors")
    with pytest.raises(ProsodyError, match="31 bin edges"):
        Prosody(ProsodyConfig(), edges32()[:-1])
    with pytest.raises(ProsodyError, match="non-decreasing"):
        Prosody(ProsodyConfig(), edges32().flip(0))
