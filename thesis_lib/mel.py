"""A log-mel front end and a small CNN with global pooling: the model beyond the thesis.

Why
---
The thesis net learns its own filterbank from 8 kHz samples and flattens
8 x 1,217 conv outputs into a 2.5-million-weight fc layer: on a few hundred
real clips it memorises the training songs (issue 10), and even a log-mel
mean/std + logistic-regression baseline beats it. The standard remedy in
music tagging since Dieleman & Schrauwen (2014) and Choi et al. (2016):

* a fixed **log-mel spectrogram** (STFT in torch, 512-sample Hann window =
  64 ms, hop 256, 64 mel bands from 40 Hz to 4 kHz via
  ``librosa.filters.mel``) -- what the thesis's raw-waveform net would have to
  learn from scratch;
* **per-band normalisation** (batch norm over the mel bands), so a
  collection's overall loudness or colouring matters less;
* three small **1-D convolutions over time** with the mel bands as channels
  (kernel 3, batch norm, ReLU, max-pool 2) -- about 90 k weights, cheap on a
  CPU (about a millisecond per training clip);
* **global pooling** (mean and max over time), so the decision depends on
  *what* occurs in the 5 seconds, not *when*, and the classifier has only
  ``2 x channels x styles`` weights; dropout before it.

It takes the thesis's input (``batch x 1 x 40000`` at 8 kHz) and gives one
logit per style, so training, evaluation, ``predict`` and ``crossval`` treat
it exactly like :class:`~thesis_lib.model.StyleNet`. Dreaming stays with the
thesis net (``--model thesis``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import THESIS, ThesisConfig

N_FFT = 512
HOP = 256
N_MELS = 64
FMIN = 40.0


def mel_filterbank(sample_rate: int = THESIS.sample_rate, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` Slaney mel filterbank from ``librosa.filters.mel``."""
    import librosa.filters

    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=sample_rate / 2)
    return torch.from_numpy(np.asarray(fb, dtype=np.float32))


class LogMel(nn.Module):
    """Waveforms ``(B, L)`` or ``(B, 1, L)`` -> log mel power ``(B, n_mels, frames)``."""

    def __init__(self, sample_rate: int = THESIS.sample_rate, n_fft: int = N_FFT, hop: int = HOP,
                 n_mels: int = N_MELS, fmin: float = FMIN):
        super().__init__()
        self.n_fft, self.hop, self.n_mels = n_fft, hop, n_mels
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, fmin), persistent=False)

    def frames(self, samples: int) -> int:
        return (samples - self.n_fft) // self.hop + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.squeeze(1)
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False,
                          return_complex=True).abs().pow(2)
        return torch.log(self.fb @ spec + 1e-6)


class MelNet(nn.Module):
    """Log-mel front end + 1-D CNN over time + global mean/max pooling + linear classifier."""

    def __init__(self, n_styles: int = 2, cfg: ThesisConfig = THESIS, channels: tuple[int, ...] = (64, 128, 128),
                 dropout: float = 0.5, n_mels: int = N_MELS, input_stats: bool = False, spec_augment: bool = False):
        super().__init__()
        self.cfg, self.n_styles = cfg, n_styles
        self.channels, self.dropout_p, self.n_mels = tuple(channels), float(dropout), n_mels
        self.input_stats, self.spec_augment = bool(input_stats), bool(spec_augment)
        self.mel = LogMel(cfg.sample_rate, n_mels=n_mels)
        self.norm = nn.BatchNorm1d(n_mels)
        layers: list[nn.Module] = []
        c = n_mels
        for co in self.channels:
            layers += [nn.Conv1d(c, co, 3, padding=1, bias=False), nn.BatchNorm1d(co), nn.ReLU(), nn.MaxPool1d(2)]
            c = co
        self.conv = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * c + (2 * n_mels if input_stats else 0), n_styles)

    def _mask(self, m: torch.Tensor) -> torch.Tensor:
        """SpecAugment-style masking while training: one band of up to 8 mel bands, one span of up to 1/8 of the frames."""
        b, f, t = m.shape
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        f0 = torch.randint(0, f, (b, 1), generator=g); fw = torch.randint(0, 9, (b, 1), generator=g)
        t0 = torch.randint(0, t, (b, 1), generator=g); tw = torch.randint(0, t // 8 + 1, (b, 1), generator=g)
        fi = torch.arange(f)[None]; ti = torch.arange(t)[None]
        keep = ~(((fi >= f0) & (fi < f0 + fw))[:, :, None] | ((ti >= t0) & (ti < t0 + tw))[:, None, :])
        return m * keep.to(m.device, m.dtype)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features: mean and max of the last conv over time (and the input bands' mean/std)."""
        m = self.norm(self.mel(x))
        if self.spec_augment and self.training:
            m = self._mask(m)
        h = self.conv(m)
        parts = [h.mean(2), h.amax(2)]
        if self.input_stats:
            parts += [m.mean(2), m.std(2)]
        return torch.cat(parts, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.embed(x)))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    def architecture(self) -> dict:
        return {"name": "MelNet", "n_styles": self.n_styles, "channels": list(self.channels),
                "dropout": self.dropout_p, "n_mels": self.n_mels, "n_fft": N_FFT, "hop": HOP,
                "input_stats": self.input_stats, "spec_augment": self.spec_augment,
                "clip_samples": self.cfg.clip_samples}
