"""A pretrained ear: the musicnn tagger, heard through a linear probe (``train --model musicnn``).

Why
---
On the free collection (95 tracks, README "Real music", chapter 4b) every
model trained from scratch stopped near 0.85 clip / 0.89 track accuracy: a few
hundred clips per style are too few to learn what a style sounds like from
nothing. The thesis's own net over-fits them. A net that has already heard a
million songs does not need to learn hearing from them, only where the styles
lie in what it hears -- the usual remedy in music tagging (transfer learning).

musicnn (J. Pons and X. Serra, "musicnn: pre-trained convolutional neural
networks for music audio tagging", ISMIR late-breaking demo 2019; ISC license,
Music Technology Group, Universitat Pompeu Fabra) is such a net, trained to
tag 3-second excerpts of the Million Song Dataset with its 50 most common
tags (rock, electronic, metal, ambient, jazz, ...; :data:`TAGS`). Its weights
ship in the package (``pretrained/musicnn-msd.pt``, 3.2 MB, converted from
the authors' TensorFlow checkpoint by :mod:`thesis_lib.pretrained.convert_musicnn`,
which checks the port against TensorFlow's own outputs).

The network, in the order :class:`Musicnn` computes it:

* **input**: a 96-band log-mel spectrogram at 16 kHz (512-sample window, hop
  256), compressed as ``log10(1 + 10000 * power)`` (:func:`tagger_spectrogram`);
* **front end**, musically motivated filters: two *timbral* convolutions
  (7 frames by 38 or 67 mel bands, 204 filters each: a short spectral shape
  anywhere in pitch) and three *temporal* ones (128, 64 or 32 frames by one
  band, 51 filters each: rhythms and envelopes), each max-pooled over
  frequency -- 561 channels per frame;
* **mid end**: three 1-D convolutions over time (64 channels, 7 frames) with
  residual connections;
* **back end**: each of the 753 channels (front and mid end together) pooled
  over time by its maximum and its mean, a 200-unit dense layer and 50 tag outputs.

:class:`MusicnnProbe` keeps the tagger frozen and fits a logistic regression
(:class:`~thesis_lib.baseline.LinearProbe`, as the log-mel baseline) on the
1,506 pooled values: cross-validated, these beat the 200-unit layer and the 50
tag probabilities (README). Nothing of the tagger is trained here, so there is
nothing to over-fit but a linear layer.

The same paper publishes a second MSD tagger of another design, which the
authors trained as the reference for musicnn: :class:`MusicnnVGG`, five 3x3
convolution blocks (128 filters, max-pooled over time *and* frequency) on the
same spectrogram, with no musically shaped filters at all. It hears the clip
through square patches of the spectrogram rather than through timbral and
temporal filters, so it errs on other clips: ``--model musicnn-vgg`` is its
probe (the mean and the maximum of each block's 128 channels: 1,280 values),
and ``train``'s default fusion (:mod:`thesis_lib.fusion`) asks both taggers.
Their weights are :data:`TAGGERS`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .baseline import LinearProbe
from .config import THESIS, ThesisConfig

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 256
N_MELS = 96
PRETRAINED = Path(__file__).resolve().parent / "pretrained"
WEIGHTS = PRETRAINED / "musicnn-msd.pt"
WEIGHTS_SHA256 = "d9296b3d98dba5ec8a4c0062efcee54eb0ad6ee60bfd945aedcd4387e4eba104"
VGG_WEIGHTS = PRETRAINED / "musicnn-vgg-msd.pt"
VGG_WEIGHTS_SHA256 = "7a9acb084146531758095c1d5aae97876ba6908bb4c47ddb4ff2d64f9d0c5a94"
#: The 50 Million Song Dataset tags, in the order of :class:`Musicnn`'s outputs.
TAGS = ("rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
        "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
        "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies",
        "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s",
        "party", "country", "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
        "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy")


class TaggerSpectrogram(nn.Module):
    """Waveforms ``(B, L)`` at 16 kHz -> musicnn's input ``(B, frames, 96)``: ``log10(1 + 10^4 mel power)``.

    As the authors' librosa front end: centred frames (reflection at the ends), a
    Hann window, power spectrum, Slaney mel filters from 0 to 8 kHz, rounded to
    float16 before the logarithm.
    """

    def __init__(self):
        super().__init__()
        from .mel import mel_filterbank

        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("fb", mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, fmin=0.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.squeeze(1)
        spec = torch.stft(x, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True).abs().pow(2)
        mel = (self.fb @ spec).half().float()
        return torch.log10(10_000 * mel + 1).transpose(1, 2)


class FrozenBatchNorm(nn.Module):
    """Batch normalisation with the statistics it was trained with (TensorFlow's epsilon 0.001)."""

    def __init__(self, n: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        for k in ("gamma", "beta", "mean", "var"):
            self.register_buffer(k, torch.zeros(n))

    def forward(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[dim] = -1
        g = self.gamma / torch.sqrt(self.var + self.eps)
        return x * g.view(shape) + (self.beta - self.mean * g).view(shape)


def _max_over_frequency(y: torch.Tensor, bn: FrozenBatchNorm) -> torch.Tensor:
    """``max_f bn(relu(y))`` of conv maps ``y`` ``(B, C, T, F)`` without normalising every value.

    ReLU is monotone and the batch norm is ``g x + b`` per channel, so the maximum over
    frequency is ``g relu(max y) + b`` where ``g >= 0`` and ``g relu(min y) + b`` where ``g < 0``
    (the same numbers; 40 % of the front end's time saved on a CPU).
    """
    lo, hi = torch.aminmax(y, dim=3)
    g = (bn.gamma / torch.sqrt(bn.var + bn.eps)).view(1, -1, 1)
    return bn(F.relu(torch.where(g >= 0, hi, lo)))


class Musicnn(nn.Module):
    """The musicnn tagger (its MSD model): spectrogram ``(B, T, 96)`` -> 50 tag logits (see the module doc)."""

    def __init__(self, n_mels: int = N_MELS, n_tags: int = len(TAGS), midend: int = 64, backend: int = 200):
        super().__init__()
        timbral, temporal = int(1.6 * 128), int(1.6 * 32)
        self.input_bn = FrozenBatchNorm(1)
        self.timbral = nn.ModuleList([nn.Conv2d(1, timbral, (7, int(f * n_mels))) for f in (0.4, 0.7)])
        self.timbral_bn = nn.ModuleList([FrozenBatchNorm(timbral) for _ in range(2)])
        self.temporal = nn.ModuleList([nn.Conv2d(1, temporal, (k, 1)) for k in (128, 64, 32)])
        self.temporal_bn = nn.ModuleList([FrozenBatchNorm(temporal) for _ in range(3)])
        self.front_channels = 2 * timbral + 3 * temporal
        self.midend = nn.ModuleList([nn.Conv1d(self.front_channels, midend, 7)]
                                    + [nn.Conv1d(midend, midend, 7) for _ in range(2)])
        self.midend_bn = nn.ModuleList([FrozenBatchNorm(midend) for _ in range(3)])
        self.n_pooled = 2 * (self.front_channels + 3 * midend)
        self.pool_bn = FrozenBatchNorm(self.n_pooled)
        self.dense = nn.Linear(self.n_pooled, backend)
        self.dense_bn = FrozenBatchNorm(backend)
        self.tags = nn.Linear(backend, n_tags)
        self.requires_grad_(False)

    def front_end(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 561, T)``: each filter's strongest response over frequency, frame by frame."""
        x = self.input_bn(spec.unsqueeze(1))                      # (B, 1, T, F)
        maps = []
        for conv, bn in zip(self.timbral, self.timbral_bn):       # 'same' in time only
            maps.append(_max_over_frequency(conv(F.pad(x, (0, 0, 3, 3))), bn))
        for conv, bn in zip(self.temporal, self.temporal_bn):     # 'same' as TensorFlow pads an even kernel
            k = conv.kernel_size[0]
            maps.append(_max_over_frequency(conv(F.pad(x, (0, 0, (k - 1) // 2, k // 2))), bn))
        return torch.cat(maps, 1)

    def pooled(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 1506)``: the maximum and the mean over time of the 753 front- and mid-end channels,
        interleaved per channel (max, mean) as the authors' back end flattens them."""
        h = self.front_end(spec)
        maps = [h]
        h = self.midend_bn[0](F.relu(self.midend[0](F.pad(h, (3, 3)))))
        maps.append(h)
        for conv, bn in zip(self.midend[1:], self.midend_bn[1:]):
            h = bn(F.relu(conv(F.pad(h, (3, 3))))) + h
            maps.append(h)
        m = torch.cat(maps, 1)
        return torch.stack([m.amax(2), m.mean(2)], 2).flatten(1)

    def penultimate(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 200)``: the dense layer before the tags."""
        return self.dense_bn(F.relu(self.dense(self.pool_bn(self.pooled(spec)))))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.tags(self.penultimate(spec))


class MusicnnVGG(nn.Module):
    """The authors' VGG-like MSD tagger: spectrogram ``(B, T, 96)`` -> 50 tag logits.

    Five blocks of a 3x3 convolution (128 filters), ReLU and batch norm, each max-pooled
    (4x1 with stride 2, then 2x2 three times, then 4x4): generic image-like filters, the
    design musicnn's musically shaped ones are compared with. Its dense layer reads a
    3-second input (187 frames); :meth:`pooled`, what the probe uses, reads any length.
    """

    POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, filters: int = 128, n_tags: int = len(TAGS), frames: int = 187, n_mels: int = N_MELS):
        super().__init__()
        self.input_bn = FrozenBatchNorm(1)
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5)])
        self.bns = nn.ModuleList([FrozenBatchNorm(filters) for _ in range(5)])
        t, f = frames, n_mels
        for (kt, kf), (st, sf) in self.POOLS:
            t, f = (t - kt) // st + 1, (f - kf) // sf + 1
        self.tags = nn.Linear(filters * t * f, n_tags)
        self.n_pooled = 2 * 5 * filters
        self.requires_grad_(False)

    def blocks(self, spec: torch.Tensor) -> list[torch.Tensor]:
        """The five pooled maps ``(B, 128, T_i, F_i)``, from fine to coarse: ``maxpool(bn(relu(conv x)))``.

        Computed as in :func:`_max_over_frequency`, pooling first: the batch norm is ``g y + b``
        per channel and ReLU is monotone, so the pooled maximum is ``bn(relu(max y))`` where
        ``g >= 0`` and ``bn(relu(min y))`` where ``g < 0``; the minimum is the maximum of the
        convolution with its sign flipped. The same numbers, with the normalisation done on
        maps 2 to 16 times smaller (the first block's took 70 % of the time on a CPU).
        """
        x, out = self.input_bn(spec.unsqueeze(1)).contiguous(memory_format=torch.channels_last), []   # 1.8x on a CPU
        for conv, bn, (k, stride) in zip(self.convs, self.bns, self.POOLS):
            sign = torch.where(bn.gamma >= 0, 1.0, -1.0).to(x.dtype)
            y = F.conv2d(x, conv.weight * sign.view(-1, 1, 1, 1), conv.bias * sign, padding=1)
            x = bn(F.relu(F.max_pool2d(y, k, stride) * sign.view(1, -1, 1, 1)))
            out.append(x)
        return out

    def pooled(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, 1280)``: each block's channels' maximum and mean over time and frequency."""
        return torch.cat([torch.cat([b.amax((2, 3)), b.mean((2, 3))], 1) for b in self.blocks(spec)], 1)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        last = self.blocks(spec)[-1]                 # flattened as TensorFlow does: (T, F, channels)
        return self.tags(last.permute(0, 2, 3, 1).flatten(1))


#: The pretrained taggers a probe can hear through, by kind (their weights: :func:`tagger_weights`).
TAGGERS: dict[str, type] = {"musicnn": Musicnn, "vgg": MusicnnVGG}


def tagger_weights(kind: str) -> tuple[Path, str]:
    """The shipped weights file of the tagger ``kind`` and its sha256 (read at call time, so tests can swap them)."""
    if kind not in TAGGERS:
        raise ValueError(f"unknown tagger {kind!r}; known: {', '.join(TAGGERS)}")
    return {"musicnn": (WEIGHTS, WEIGHTS_SHA256), "vgg": (VGG_WEIGHTS, VGG_WEIGHTS_SHA256)}[kind]


def load_musicnn(path: str | Path | None = None, kind: str = "musicnn") -> nn.Module:
    """The tagger ``kind`` (:data:`TAGGERS`) with the shipped (or given) weights, frozen, in eval mode;
    the shipped file's sha256 is checked."""
    from .pretrained import PretrainedError, sha256

    shipped, digest = tagger_weights(kind)
    path = Path(path) if path is not None else shipped
    if not path.is_file():
        raise PretrainedError(f"{path}: the {kind} tagger's weights are missing; reinstall the package "
                              "(or convert them: python -m thesis_lib.pretrained.convert_musicnn)")
    if path == shipped and sha256(path) != digest:
        raise PretrainedError(f"{path}: sha256 differs from the one this version shipped; the file is damaged")
    net = TAGGERS[kind]()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()


class MusicnnProbe(LinearProbe):
    """A frozen tagger's pooled activations of a 16-kHz clip, standardised, into a logistic regression.

    ``kind`` names the tagger (:data:`TAGGERS`): ``musicnn`` (``train --model musicnn``) or
    ``vgg`` (``--model musicnn-vgg``).
    """

    def __init__(self, n_styles: int = 2, cfg: ThesisConfig = THESIS, C: float = 1.0, tagger: nn.Module | None = None,
                 kind: str = "musicnn", balanced: bool = True):
        tagger_weights(kind)                     # refuses an unknown kind, naming the known ones
        super().__init__(n_styles, cfg, TAGGERS[kind]().n_pooled if tagger is None else tagger.n_pooled, C, balanced)
        self.kind = kind
        if cfg.sample_rate != SAMPLE_RATE:
            raise ValueError(f"musicnn hears {SAMPLE_RATE} Hz, not {cfg.sample_rate} Hz: "
                             "prepare the clips at 16 kHz (TrainSettings.sample_rate)")
        self.spectrogram = TaggerSpectrogram()
        # Not a registered submodule: the tagger belongs to the package (sha256-checked on load), not to
        # a run, so a checkpoint holds only the linear probe (a few kB) and never a rounded copy of it.
        self.__dict__["tagger"] = tagger if tagger is not None else load_musicnn(kind=kind)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.tagger._apply(fn, recurse)        # .to(device) moves the tagger too
        return self

    cache_features = True        # 0.1 s a clip on two CPU cores: computed once per collection and process

    def feature_key(self) -> tuple:
        return (*super().feature_key(), self.kind, float(self.tagger.tags.weight.double().sum()))   # its weights

    #: Clips heard at once: the front end's maps of one 5-second clip take 44 MB (204 filters x 313
    #: frames x 59 pitches for one timbral filter bank alone), so a batch of 480 would need 20 GB.
    chunk = 8

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spectrogram(x)
        return torch.cat([self.tagger.pooled(spec[i:i + self.chunk]) for i in range(0, len(spec), self.chunk)])

    def train(self, mode: bool = True) -> "MusicnnProbe":
        super().train(mode)
        self.tagger.eval()      # frozen: its batch norms keep their statistics
        return self

    def architecture(self) -> dict:
        path, digest = tagger_weights(self.kind)
        return {"name": "MusicnnProbe", "n_styles": self.n_styles, "C": self.C, "balanced": self.balanced,
                "tagger": path.name,
                "tagger_sha256": digest, "clip_samples": self.cfg.clip_samples}
