"""The simple baseline every CNN must beat: log-mel mean/std per band + logistic regression.

Why
---
On small real collections a 1990s-style summary -- the mean and standard
deviation of each of 64 log-mel bands over a 5-second clip, standardised,
into a multinomial logistic regression -- beat the thesis net by a wide
margin (issue 10). Keeping it in the library lets ``train --model baseline``
and ``crossval --model baseline`` put every CNN number next to it.

It is an ``nn.Module`` with the thesis's input and one logit per style, so it
is saved, loaded and used by ``predict`` like the CNNs. It is not trained by
gradient steps over epochs: :meth:`LogMelBaseline.fit` computes the features
of every training clip once and solves the L2-regularised logistic
regression with L-BFGS (``C = 1`` as in scikit-learn's default: mean
cross-entropy + ``||W||^2 / (2 C N)``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import THESIS, ThesisConfig
from .mel import N_MELS, LogMel


class LogMelBaseline(nn.Module):
    """Standardised log-mel mean/std per band -> linear layer (softmax = logistic regression)."""

    def __init__(self, n_styles: int = 2, cfg: ThesisConfig = THESIS, n_mels: int = N_MELS, C: float = 1.0):
        super().__init__()
        self.cfg, self.n_styles, self.n_mels, self.C = cfg, n_styles, n_mels, float(C)
        self.mel = LogMel(cfg.sample_rate, n_mels=n_mels)
        self.register_buffer("mean", torch.zeros(2 * n_mels))
        self.register_buffer("scale", torch.ones(2 * n_mels))
        self.out = nn.Linear(2 * n_mels, n_styles)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2 * n_mels)``: mean then standard deviation of each log-mel band over time."""
        m = self.mel(x)
        return torch.cat([m.mean(2), m.std(2)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out((self.features(x) - self.mean) / self.scale)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    def clip_features(self, clips: np.ndarray, batch_size: int = 128, rows: np.ndarray | None = None) -> torch.Tensor:
        """Features of ``clips`` (or of its ``rows``), read a batch at a time: a memory-mapped
        collection is never loaded whole (2,300 clips of 5 s at 16 kHz are 0.7 GB)."""
        rows = np.arange(len(clips)) if rows is None else np.asarray(rows)
        device = self.mean.device
        out = [self.features(torch.from_numpy(np.ascontiguousarray(clips[rows[lo:lo + batch_size]], np.float32))
                             .to(device)).cpu()
               for lo in range(0, len(rows), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 2 * self.n_mels)

    def fit(self, clips: np.ndarray, labels: np.ndarray, max_iter: int = 500,
            rows: np.ndarray | None = None) -> "LogMelBaseline":
        """Fit on ``clips`` ``(N, L)`` (or on its ``rows``) with classes ``labels``; returns ``self`` in eval mode."""
        return self.fit_features(self.clip_features(clips, rows=rows), labels, max_iter)

    def fit_features(self, feats: torch.Tensor, labels: np.ndarray, max_iter: int = 500) -> "LogMelBaseline":
        device = self.mean.device
        y = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=device)
        feats = torch.as_tensor(feats, dtype=torch.float32, device=device)
        with torch.no_grad():
            self.mean.copy_(feats.mean(0))
            self.scale.copy_(feats.std(0).clamp_min(1e-6) if len(feats) > 1 else torch.ones_like(self.scale))
        z = (feats - self.mean) / self.scale
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        opt = torch.optim.LBFGS(self.out.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-6, tolerance_change=1e-10)
        lam = 1.0 / (self.C * max(len(y), 1))

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(self.out(z), y) + 0.5 * lam * self.out.weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return self.eval()

    def architecture(self) -> dict:
        return {"name": "LogMelBaseline", "n_styles": self.n_styles, "n_mels": self.n_mels, "C": self.C,
                "clip_samples": self.cfg.clip_samples}
