"""Suite-wide settings: tiny models run fastest on one thread (and the suite shares 2 cores)."""

import torch

torch.set_num_threads(1)
