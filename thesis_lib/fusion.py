"""Late fusion: models of different kinds vote together (``train``'s default is one).

Why
---
On the free collection (README "Real music", chapter 4b) two models of
different kinds make different mistakes on single clips even where they share
the hard tracks, and combining their votes helped on every dealing of the folds
we measured (issue 10), without a weight or threshold to tune: the
probabilities are simply multiplied.

* ``fusion`` (``train``'s default): the linear probes of two pretrained taggers
  (:class:`~thesis_lib.musicnn.MusicnnProbe`: what nets that have heard a
  million songs hear in the clip -- musicnn through musically shaped filters,
  the authors' VGG-like net through square spectrogram patches) and the
  log-mel baseline (:class:`~thesis_lib.baseline.LogMelBaseline`: each band's
  level and spread). The VGG member joined after cross-validation on three
  collections (README "Real music": clip accuracy up in 7 of 8 dealings, level in one);
* ``fusion-mel`` (the default before the tagger): the log-mel CNN
  (:class:`~thesis_lib.mel.MelNet`, patterns over time learnt from this
  collection) and the same baseline.

:class:`LateFusion` holds the members by name (:data:`FUSIONS`); its output is
the mean of their log-probabilities, so its softmax is the **normalised
geometric mean** of their probabilities (a "product of experts": a style wins
where all find it likely, and one confident veto counts). Each member is
trained as it would be alone (:func:`thesis_lib.robust.fit_robust`; with the
same seed the ``fusion-mel`` CNN *is* ``--model mel``'s); nothing is fitted on
their combination, so there is nothing that could over-fit a small collection.
It is saved, loaded and used by ``predict``, ``crossval`` and ``evaluate`` like
any other model: the checkpoint records each member's architecture.

Dreaming needs a network whose input gradient means something over the whole
clip: that stays the thesis net (``--model thesis``); the probes' features are
computed without gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import THESIS, ThesisConfig

#: Which ``train --model`` each member name is trained as (:func:`thesis_lib.robust.fit_robust`).
MEMBER_MODELS = {"tagger": "musicnn", "vgg": "musicnn-vgg", "cnn": "mel", "baseline": "baseline"}
#: The members of each fused model ``train --model`` knows, in the order they are trained.
FUSIONS = {"fusion": ("tagger", "vgg", "baseline"), "fusion-mel": ("cnn", "baseline")}


def build_members(kind: str, n_styles: int, cfg: ThesisConfig = THESIS, dropout: float = 0.5) -> dict[str, nn.Module]:
    """Fresh members of the fusion ``kind`` (:data:`FUSIONS`)."""
    from .robust import build_model

    if kind not in FUSIONS:
        raise ValueError(f"unknown fusion {kind!r}; known: {', '.join(FUSIONS)}")
    first, *rest = FUSIONS[kind]
    members = {first: build_model(MEMBER_MODELS[first], n_styles, cfg, dropout=dropout)}   # as it is built alone
    with torch.random.fork_rng(devices=[]):   # the others draw nothing the first one's training would see next
        for name in rest:
            members[name] = build_model(MEMBER_MODELS[name], n_styles, cfg, dropout=dropout)
    return members


class LateFusion(nn.Module):
    """Models whose probabilities are multiplied (their normalised geometric mean)."""

    def __init__(self, n_styles: int = 2, cfg: ThesisConfig = THESIS, dropout: float = 0.5,
                 members: dict[str, nn.Module] | None = None, kind: str = "fusion"):
        super().__init__()
        self.cfg, self.n_styles = cfg, n_styles
        members = members if members is not None else build_members(kind, n_styles, cfg, dropout)
        unknown = sorted(set(members) - set(MEMBER_MODELS))
        if len(members) < 2 or unknown:
            raise ValueError(f"a fusion needs two or more members named from {', '.join(MEMBER_MODELS)}; "
                             f"got {', '.join(members)}")
        for name, m in members.items():
            if m.n_styles != n_styles:
                raise ValueError(f"member {name!r} has {m.n_styles} styles, the fusion {n_styles}")
            self.add_module(name, m)
        self.member_names = tuple(members)

    def members(self) -> dict[str, nn.Module]:
        """The fused models by name, in the order they are trained."""
        return {name: getattr(self, name) for name in self.member_names}

    @property
    def kind(self) -> str:
        """``fusion`` or ``fusion-mel``: the ``train --model`` that builds these members."""
        return next((k for k, v in FUSIONS.items() if v == self.member_names), "fusion")

    @staticmethod
    def combine(member_logits: list[torch.Tensor]) -> torch.Tensor:
        """The fused logits from the members' own (or their log-probabilities: ``log_softmax``
        leaves those as they are): the mean of their log-probabilities."""
        return torch.stack([F.log_softmax(v, dim=1) for v in member_logits]).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits whose softmax is the normalised geometric mean of the members' probabilities."""
        return self.combine([m(x) for m in self.members().values()])

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)

    def member_probabilities(self, clips, rows=None, batch_size: int = 64,
                             device: torch.device | str | None = None) -> dict[str, np.ndarray]:
        """Each member's :func:`~thesis_lib.predict.clip_probabilities` of ``clips`` (or its ``rows``;
        a probe reads its cached features), by name."""
        from .predict import clip_probabilities

        device = device if device is not None else next(self.parameters()).device
        return {name: clip_probabilities(m, clips, batch_size, device, rows=rows, fold=False)
                for name, m in self.members().items()}

    def fused_logits(self, member_probs: dict[str, np.ndarray]) -> torch.Tensor:
        """:meth:`combine` of the members' probabilities; one that underflowed to 0 is a veto (log 1e-30)."""
        return self.combine([torch.from_numpy(p).clamp_min(1e-30).log() for p in member_probs.values()])

    @torch.no_grad()
    def clip_logits(self, clips, rows=None, batch_size: int = 64) -> torch.Tensor:
        """Fused logits of ``clips`` (or its ``rows``) from :meth:`member_probabilities`."""
        return self.fused_logits(self.member_probabilities(clips, rows, batch_size))

    def architecture(self) -> dict:
        return {"name": "LateFusion", "n_styles": self.n_styles, "combine": "geometric mean",
                "members": {k: m.architecture() for k, m in self.members().items()},
                "clip_samples": self.cfg.clip_samples}
