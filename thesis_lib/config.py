"""One source of truth for every number of the thesis.

The notebooks, the command line and the tests all read :data:`THESIS`, a frozen
:class:`ThesisConfig`.  Where the book departs from the thesis (for example the
learning rate that ``train`` uses on small collections) the departure lives here
too, next to the thesis value it replaces, so a reader can compare them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ConvSpec:
    """One convolutional layer of the thesis net: filters, filter length, stride."""

    filters: int
    length: int
    stride: int


@dataclass(frozen=True)
class ThesisConfig:
    """Hyper-parameters of Geng (2016), chapters 4.1-4.2, with thesis names.

    Pre-processing, the network and the optimiser are all described by these
    fields; derived quantities (clip length in seconds, output lengths of the
    convolutions) are properties so they can never disagree with the inputs.
    """

    # --- pre-processing (thesis 4.1) -------------------------------------
    sample_rate: int = 8000          #: Hz, every track is resampled to this
    peak: float = 0.9                #: peak absolute value after normalisation
    trim_samples: int = 240_000      #: dropped at each end (30 s at 8 kHz)
    clip_samples: int = 40_000       #: one clip (5 s at 8 kHz)
    resample_type: str = "soxr_hq"   #: librosa's high-quality resampler
    # --- dataset (thesis 4.1) --------------------------------------------
    train_per_style: int = 2400
    test_per_style: int = 240
    # --- network (thesis 4.2) --------------------------------------------
    convs: tuple[ConvSpec, ...] = (
        ConvSpec(8, 8, 2),
        ConvSpec(8, 32, 4),
        ConvSpec(8, 128, 4),
    )
    fc_units: int = 256
    bn_eps: float = 1e-4
    bn_momentum: float = 0.1         #: Lasagne's running-average alpha
    # --- optimisation (thesis 4.2) ---------------------------------------
    learning_rate: float = 0.01
    momentum: float = 0.9            #: Nesterov
    batch_size: int = 480
    test_batch_size: int = 48
    epochs: int = 20

    @property
    def trim_seconds(self) -> float:
        return self.trim_samples / self.sample_rate

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    @property
    def min_track_samples(self) -> int:
        """Shortest track (at ``sample_rate``) that still yields one clip."""
        return 2 * self.trim_samples + self.clip_samples

    def conv_output_lengths(self) -> list[int]:
        """Time steps after each convolution ('valid' padding, no pooling)."""
        n, lengths = self.clip_samples, []
        for spec in self.convs:
            n = (n - spec.length) // spec.stride + 1
            lengths.append(n)
        return lengths

    def receptive_fields(self) -> list[tuple[int, int]]:
        """(receptive field, hop) in input samples for each convolution."""
        field_, hop, out = 1, 1, []
        for spec in self.convs:
            field_ += (spec.length - 1) * hop
            hop *= spec.stride
            out.append((field_, hop))
        return out

    def lowest_frequencies(self) -> list[float]:
        """Lowest frequency one period of a filter could hold (thesis 4.2).

        The thesis reads each filter length in *input* samples: 8000/8, 8000/32,
        8000/128 Hz.
        """
        return [self.sample_rate / spec.length for spec in self.convs]

    def input_rates(self) -> list[float]:
        """Sample rate of the signal each convolution reads: 8000, 4000, 1000 Hz for the thesis net."""
        rates, r = [], float(self.sample_rate)
        for spec in self.convs:
            rates.append(r)
            r /= spec.stride
        return rates

    def with_(self, **changes: Any) -> "ThesisConfig":
        """A copy with some fields changed (the config itself is frozen)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["convs"] = [asdict(c) if not isinstance(c, dict) else c for c in self.convs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ThesisConfig":
        d = dict(d)
        if "convs" in d:
            d["convs"] = tuple(ConvSpec(**c) for c in d["convs"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


CONV_LAYERS = ("conv1", "conv2", "conv3")
"""Names of the thesis net's convolutions, input to output (:class:`thesis_lib.model.StyleNet`)."""

THESIS = ThesisConfig()
"""The thesis's own configuration; ``reproduce`` uses it unchanged."""

SILENCE = 1e-4
"""A signal whose level (peak of a track, RMS of a clip) stays below this (-80 dBFS) counts as silent."""


@dataclass
class TrainSettings:
    """The training settings of one run: what ``train`` uses and what ``model.pt`` and ``metrics.json`` record.

    The defaults suit ``train`` on a user's own collection. The thesis's
    learning rate 0.01 with batch 480 gives only 10 updates per epoch on 4,800
    clips; on a few hundred clips it gives one or two and the run is unstable
    (loss jumping back up, test accuracy anywhere from chance to 0.9 depending
    on the held-out tracks). A smaller step and small batches give enough
    updates per epoch on small sets and still train well on the thesis's 4,800
    clips. :meth:`thesis` gives the thesis's values, which ``reproduce`` and the
    book use. The thesis's own numbers stay in the frozen :data:`THESIS`; a
    trained model records :meth:`applied_to` of it, the config it was really
    trained with.
    """

    learning_rate: float = 0.001
    batch_size: int = 32
    epochs: int = 20
    momentum: float = THESIS.momentum
    test_batch_size: int = THESIS.test_batch_size
    seed: int = 0
    device: str = "auto"
    #: After training, set batch-norm statistics to exact averages over the training set
    #: (the thesis's "training-set statistics at test time") instead of the running
    #: averages, which lag behind on runs with few updates.
    calibrate_batchnorm: bool = True
    #: ``auto`` (default): the fast paths of :mod:`thesis_lib.fast` on CPUs and CUDA GPUs,
    #: where they are faster, the plain modules elsewhere; ``fast`` or ``reference`` to force one.
    #: Both compute the same function (tested), so results agree to rounding.
    impl: str = "auto"
    #: Arithmetic of the thesis net's fast path: ``auto`` (default: ``bf16`` where the CPU or GPU
    #: has bfloat16 units, else ``fp32``; see :func:`thesis_lib.fast.resolve_precision`), ``fp32``,
    #: ``tf32`` (TF32 matrix products on CUDA GPUs) or ``bf16``. A thesis epoch takes 0.080, 0.062
    #: and 0.046 s on an H100 and 10.4 s (fp32) or 6.3 s (bf16) on the project's 2-core CPU, with
    #: the same test accuracy (README "Speed and scale"). Runs record the one they used.
    precision: str = "auto"
    #: Which network: ``thesis`` (the thesis's raw-waveform :class:`~thesis_lib.model.StyleNet`, the
    #: one the dreaming chapters need), ``mel`` (:class:`~thesis_lib.mel.MelNet`: log-mel front end,
    #: small CNN, global pooling), ``baseline`` (:class:`~thesis_lib.baseline.LogMelBaseline`),
    #: ``musicnn`` (:class:`~thesis_lib.musicnn.MusicnnProbe`: a pretrained tagger, frozen, and a
    #: logistic regression), ``musicnn-vgg`` (the same on the authors' VGG-like tagger), ``fusion``
    #: (:class:`~thesis_lib.fusion.LateFusion`: ``musicnn``, ``musicnn-vgg`` and ``baseline`` voting
    #: together, ``train``'s default) or ``fusion-mel`` (``mel`` and ``baseline``).
    model: str = "thesis"
    #: ``thesis``: the thesis's loop (the same consecutive clips every epoch, a fixed number of
    #: epochs). ``robust`` (:mod:`thesis_lib.robust`): fresh random windows from the training tracks
    #: every epoch, style-keeping augmentation, weight decay and dropout, a one-cycle schedule and
    #: the epoch chosen on a validation split by track.
    recipe: str = "thesis"
    optimizer: str = "sgd"           #: ``sgd`` (Nesterov, thesis) or ``adamw``; robust recipe only
    weight_decay: float = 0.0        #: robust recipe only
    dropout: float = 0.0             #: before the classifier; robust recipe only
    augment: bool = False            #: gain, polarity, mixing within a style; robust recipe only
    val_fraction: float = 0.0        #: of each style's training tracks, for choosing the epoch; robust only
    #: Sample rate the clips are prepared at; ``None``: the thesis's 8 kHz. The log-mel models of the
    #: robust recipe read 16 kHz: hi-hats, cymbals and the hiss of distortion live above 4 kHz
    #: (README "Real music": +0.06 clip accuracy for the log-mel CNN, +0.09 for the baseline).
    sample_rate: int | None = None

    @classmethod
    def recommended(cls, model: str = "fusion", **overrides) -> "TrainSettings":
        """``train``'s defaults: the robust recipe (see :mod:`thesis_lib.robust`) for ``model``.

        Cross-validated on real recordings in the README ("Real music"). Standard
        values, not tuned to one collection: AdamW at 0.001 for the log-mel CNN (alone or
        in ``fusion-mel``; the probes of ``fusion`` are fitted in closed form),
        SGD with Nesterov momentum at the thesis net's usual small-collection
        step for the thesis net, batch 32, 20 epochs, dropout 0.5, a fifth of
        the training tracks for choosing the epoch.
        """
        base = dict(model=model, recipe="robust", batch_size=32, epochs=20, dropout=0.5, augment=True,
                    val_fraction=0.2)
        if model == "thesis":   # its strides and fc layer are the thesis's, made for 8 kHz
            base.update(optimizer="sgd", learning_rate=0.001, weight_decay=5e-4)
        else:
            base.update(optimizer="adamw", learning_rate=0.001, weight_decay=1e-4, sample_rate=16_000)
        return cls(**{**base, **overrides})

    @classmethod
    def thesis(cls, cfg: ThesisConfig = THESIS, **overrides) -> "TrainSettings":
        """The thesis's values: learning rate 0.01, batch 480, 20 epochs."""
        base = dict(learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, epochs=cfg.epochs,
                    momentum=cfg.momentum, test_batch_size=cfg.test_batch_size)
        return cls(**{**base, **overrides})

    def applied_to(self, cfg: ThesisConfig = THESIS) -> ThesisConfig:
        """``cfg`` with its optimiser fields (and sample rate) set to these settings: the config a trained model records.

        A sample rate other than ``cfg``'s keeps the trimmed and clip *seconds* (30 s, 5 s) and
        scales their sample counts, so the data must be prepared with this config
        (:func:`thesis_lib.data.prepare_dataset`; :func:`thesis_lib.robust.prepared_for`).
        """
        out = cfg.with_(learning_rate=self.learning_rate, batch_size=self.batch_size, epochs=self.epochs,
                        momentum=self.momentum, test_batch_size=self.test_batch_size)
        if self.sample_rate and self.sample_rate != cfg.sample_rate:
            if self.sample_rate < 1000:
                raise ValueError(f"sample rate {self.sample_rate} Hz is too low for music")
            out = out.with_(sample_rate=int(self.sample_rate), trim_samples=round(cfg.trim_seconds * self.sample_rate),
                            clip_samples=round(cfg.clip_seconds * self.sample_rate))
        return out


TRAIN_DEFAULTS = TrainSettings.recommended()
"""The defaults of ``python -m thesis_lib train`` (two pretrained taggers' probes and the log-mel baseline fused)."""

MODELS = ("fusion", "musicnn", "musicnn-vgg", "fusion-mel", "mel", "thesis", "baseline")
"""What ``train --model`` and ``crossval --model`` accept; ``thesis`` is the thesis's network."""

BENCH_PARTS = ("training", "inference", "preparation", "memory")
"""What one ``bench`` run measures, in its order; ``bench --parts`` picks some (chapter 8)."""


# Thesis chapter 5, Table 1: training loss and seconds per epoch on a GTX TITAN X.
THESIS_TABLE1: tuple[tuple[int, float, float], ...] = (
    (1, 0.621, 10.768), (2, 0.190, 10.759), (3, 0.101, 10.772), (4, 0.0638, 10.786),
    (5, 0.0487, 10.863), (6, 0.0415, 10.877), (7, 0.0325, 10.878), (8, 0.0256, 10.891),
    (9, 0.0246, 10.910), (10, 0.0192, 10.913), (11, 0.0154, 10.913), (12, 0.0135, 10.914),
    (13, 0.0116, 11.025), (14, 0.00958, 12.014), (15, 0.00894, 12.020), (16, 0.00872, 12.667),
    (17, 0.00695, 12.479), (18, 0.00729, 12.482), (19, 0.00587, 12.444), (20, 0.00554, 12.469),
)
THESIS_TEST_ACCURACY = 0.8083
THESIS_SECONDS_PER_EPOCH = 11.39
THESIS_EXP_TIMING = {"values": 230_400, "repeats": 1000, "cpu_s": 2.91, "gpu_s": 0.849}
THESIS_CITATION = (
    "S. Geng, Music Style Classification and Transformation using Convolutional "
    "Neural Network, M.Sc. thesis project, University of Miami, 2016."
)

__all__ = [
    "ConvSpec", "ThesisConfig", "THESIS", "CONV_LAYERS", "SILENCE", "TrainSettings", "TRAIN_DEFAULTS", "MODELS",
    "THESIS_TABLE1", "THESIS_TEST_ACCURACY", "THESIS_SECONDS_PER_EPOCH",
    "THESIS_EXP_TIMING", "THESIS_CITATION",
]
