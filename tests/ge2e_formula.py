"""Formula weights and waveform shared by ``tests/test_ge2e.py`` and ``scripts/ge2e_reference.py`` (no random
generator, so the reference stays valid across numpy and torch versions)."""

import numpy as np

SHAPES = {"lstm.weight_ih_l0": (1024, 40), "lstm.weight_hh_l0": (1024, 256), "lstm.bias_ih_l0": (1024,),
          "lstm.bias_hh_l0": (1024,), "lstm.weight_ih_l1": (1024, 256), "lstm.weight_hh_l1": (1024, 256),
          "lstm.bias_ih_l1": (1024,), "lstm.bias_hh_l1": (1024,), "lstm.weight_ih_l2": (1024, 256),
          "lstm.weight_hh_l2": (1024, 256), "lstm.bias_ih_l2": (1024,), "lstm.bias_hh_l2": (1024,),
          "linear.weight": (256, 256), "linear.bias": (256,)}


SCALES = {"weight_ih_l0": 20.0, "weight_hh": 0.03, "weight_ih": 0.08, "bias": 0.05, "linear.weight": 0.15}


def formula_state() -> dict[str, np.ndarray]:
    """Resemblyzer's ``model_state`` shapes, filled with ``s sin(0.37 i + k) cos(0.011 i)`` (k: the tensor's rank in
    SHAPES; s: :data:`SCALES`, input weights large and recurrent ones small, so that the embedding follows the input
    instead of saturating on the recurrence; forget-gate biases + 3)."""
    def scale(name: str) -> float:
        return next(v for k, v in SCALES.items() if k in name)

    out = {}
    for k, (name, shape) in enumerate(SHAPES.items()):
        i = np.arange(np.prod(shape))
        out[name] = (scale(name) * np.sin(0.37 * i + k) * np.cos(0.011 * i)).reshape(shape).astype(np.float32)
        if name.startswith("lstm.bias_ih"):
            out[name][256:512] += 3.0  # forget gates open (nn.LSTM's gate order i, f, g, o): the zero-padded tail
            # of a partial does not wash out what came before
    return out


def formula_wav(n: int) -> np.ndarray:
    """``[n]`` f32 at 16 kHz: a 150-300 Hz glide with three harmonics, amplitude-modulated at 3 Hz, scaled to -30 dBFS."""
    t = np.arange(n) / 16000.0
    f0 = 150.0 + 150.0 * t / max(t[-1], 1e-9)
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    x = sum(np.sin(h * phase) / h for h in (1, 2, 3)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (x * (10 ** (-30 / 20) / np.sqrt(np.mean(x ** 2)))).astype(np.float32)
