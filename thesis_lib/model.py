"""The thesis's classifier (thesis 4.2): three strided 1-D convolutions on the raw waveform.

No pooling anywhere (pooling would blur time). Each convolution is followed
by a ReLU and a batch normalisation; the input is batch-normalised too. The
layer names are the thesis's, and :meth:`StyleNet.features` returns any of
them by name, which is what the dreaming chapters optimise.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

import torch
from torch import nn

import numpy as np

from .config import CONV_LAYERS, THESIS, ThesisConfig


class StyleNet(nn.Module):
    """Raw-waveform CNN: ``batch x 1 x clip_samples`` in, one logit per style out (chapter 3 of the book).

    ``forward`` returns logits; the thesis's softmax is applied by the loss
    (cross-entropy) and by :meth:`predict_proba`. With two styles the
    categorical cross-entropy equals the thesis's binary cross-entropy on the
    softmax output averaged over both units.
    """

    def __init__(self, n_styles: int = 2, cfg: ThesisConfig = THESIS):
        super().__init__()
        self.cfg = cfg
        self.n_styles = n_styles
        bn = dict(eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        layers: "OrderedDict[str, nn.Module]" = OrderedDict(input_norm=nn.BatchNorm1d(1, **bn))
        channels = 1
        for i, spec in enumerate(cfg.convs, start=1):
            layers[f"conv{i}"] = nn.Sequential(nn.Conv1d(channels, spec.filters, spec.length, spec.stride),
                                               nn.ReLU())
            layers[f"norm{i}"] = nn.BatchNorm1d(spec.filters, **bn)
            channels = spec.filters
        self.body = nn.Sequential(layers)
        flat = channels * cfg.conv_output_lengths()[-1]
        self.fc = nn.Sequential(nn.Linear(flat, cfg.fc_units), nn.ReLU())
        self.out = nn.Linear(cfg.fc_units, n_styles)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero biases, as Lasagne's defaults in the thesis."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                m.reset_parameters()

    @property
    def layer_names(self) -> list[str]:
        """Every named stage, input to output: input_norm, conv1, norm1, ..., fc, out."""
        return [name for name, _ in self.body.named_children()] + ["fc", "out"]

    def conv_layers(self) -> list[nn.Conv1d]:
        """The convolutions, input to output (``conv1``, ``conv2``, ...; see :data:`CONV_LAYERS`)."""
        return [self.body.get_submodule(f"conv{i}")[0] for i in range(1, len(self.cfg.convs) + 1)]

    def conv(self, layer: str) -> nn.Conv1d:
        """The convolution named ``layer`` (one of :data:`CONV_LAYERS`)."""
        return self.conv_layers()[CONV_LAYERS.index(layer)]

    def norm_layers(self) -> list[nn.BatchNorm1d]:
        """The batch normalisations, input to output: ``input_norm``, ``norm1``, ``norm2``, ..."""
        return [self.body.get_submodule(n) for n in
                ["input_norm"] + [f"norm{i}" for i in range(1, len(self.cfg.convs) + 1)]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        h = self.body(x)
        return self.out(self.fc(h.flatten(1)))

    def features(self, x: torch.Tensor, layers: Iterable[str] | str) -> dict[str, torch.Tensor]:
        """Outputs of the named stages (conv outputs are after their ReLU, as in Lasagne).

        Stops as soon as the deepest requested stage is computed, so dreaming
        on conv1 does not pay for conv3.
        """
        wanted = {layers} if isinstance(layers, str) else set(layers)
        unknown = wanted - set(self.layer_names)
        if unknown:
            raise KeyError(f"unknown layer(s) {sorted(unknown)}; choose from {self.layer_names}")
        h = x.unsqueeze(1) if x.dim() == 2 else x
        out: dict[str, torch.Tensor] = {}
        for name, module in self.body.named_children():
            h = module(h)
            if name in wanted:
                out[name] = h
            if len(out) == len(wanted):
                return out
        h = self.fc(h.flatten(1))
        if "fc" in wanted:
            out["fc"] = h
        if "out" in wanted:
            out["out"] = self.out(h)
        return out

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    def architecture(self) -> dict:
        """What a checkpoint must match to be loaded into this class."""
        return {"name": "StyleNet", "n_styles": self.n_styles,
                "convs": [[c.filters, c.length, c.stride] for c in self.cfg.convs],
                "fc_units": self.cfg.fc_units, "clip_samples": self.cfg.clip_samples}


def frequency_response(weights: np.ndarray, sample_rate: float, n_fft: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude responses (dB) of 1-D filters ``(filters, in_channels, length)`` or ``(filters, length)``.

    Convention: PyTorch's ``Conv1d`` computes a cross-correlation, where the
    thesis's Lasagne convolved (flipped the filter). Reversing a real filter
    only conjugates its frequency response and adds a linear phase, so the
    *magnitude* response is the same either way and no flip is made. A filter
    with several input channels gets the power averaged over its channels (the
    RMS response). Returns ``(frequencies in Hz, dB of shape (filters, n_fft//2+1))``
    on the ``rfft`` grid from 0 to the Nyquist frequency; ``10 log10(power + 1e-12)``.
    Chapter 5 of the book plots these responses.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:
        w = w[:, None, :]
    power = np.mean(np.abs(np.fft.rfft(w, n=n_fft, axis=-1)) ** 2, axis=1)
    return np.fft.rfftfreq(n_fft, 1 / sample_rate), 10 * np.log10(power + 1e-12)


def filter_responses(model: StyleNet, layer: str = "conv1", n_fft: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """:func:`frequency_response` of every filter of ``layer``, at the sample rate of the signal that layer reads."""
    rate = model.cfg.input_rates()[CONV_LAYERS.index(layer)]
    return frequency_response(model.conv(layer).weight.detach().cpu().numpy(), rate, n_fft)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_shapes(model: StyleNet, batch: int = 1) -> "OrderedDict[str, tuple[int, ...]]":
    """Output shape of every named stage for one batch of clips."""
    x = torch.zeros(batch, 1, model.cfg.clip_samples)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        feats = model.features(x, model.layer_names)
    model.train(was_training)
    return OrderedDict((n, tuple(feats[n].shape)) for n in model.layer_names)
