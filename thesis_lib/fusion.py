"""Late fusion: the log-mel CNN and the log-mel baseline vote together (``train``'s default).

Why
---
On the free collection (README "Real music", chapter 4b) the log-mel CNN
(:class:`~thesis_lib.mel.MelNet`) and the log-mel baseline
(:class:`~thesis_lib.baseline.LogMelBaseline`) are two models of different
kinds: the CNN hears *patterns over time* (an attack, a drum pattern, a
riff), the baseline only each band's *level and spread* over the clip. Their
mistakes overlap on hard tracks, but not on every clip, and combining their
votes helped on every dealing of the folds we measured (issue 10), without a
weight or threshold to tune: the two are simply multiplied.

* :class:`LateFusion` holds both members; its output is the mean of their
  log-probabilities, so its softmax is the **normalised geometric mean** of
  the two models' probabilities (a "product of experts": a style wins where
  both find it likely, and one confident veto counts);
* each member is trained as it would be alone (:func:`thesis_lib.robust.fit_robust`:
  the CNN with the robust recipe, the baseline in closed form on the same
  training tracks; with the same seed the fusion's CNN *is* ``--model mel``'s);
  nothing is fitted on their combination, so there is nothing that could
  over-fit a small collection;
* it is saved, loaded and used by ``predict``, ``crossval`` and ``evaluate``
  like any other model: the checkpoint records both members' architectures.

Dreaming needs a network whose input gradient means something over the whole
clip: that stays the thesis net (``--model thesis``); the baseline's features
are computed without gradients, so a fusion's gradient is its CNN's alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .baseline import LogMelBaseline
from .config import THESIS, ThesisConfig
from .mel import MelNet


class LateFusion(nn.Module):
    """A log-mel CNN and a log-mel baseline whose probabilities are multiplied (geometric mean)."""

    def __init__(self, n_styles: int = 2, cfg: ThesisConfig = THESIS, dropout: float = 0.5,
                 cnn: MelNet | None = None, baseline: LogMelBaseline | None = None):
        super().__init__()
        self.cfg, self.n_styles = cfg, n_styles
        self.cnn = cnn if cnn is not None else MelNet(n_styles, cfg, dropout=dropout)
        if baseline is None:
            with torch.random.fork_rng(devices=[]):   # draws nothing the CNN's training would see next
                baseline = LogMelBaseline(n_styles, cfg)
        self.baseline = baseline
        if self.cnn.n_styles != n_styles or self.baseline.n_styles != n_styles:
            raise ValueError(f"members with {self.cnn.n_styles} and {self.baseline.n_styles} styles "
                             f"for a fusion of {n_styles}")

    def members(self) -> dict[str, nn.Module]:
        """The fused models by name, in the order they are trained."""
        return {"cnn": self.cnn, "baseline": self.baseline}

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

    def architecture(self) -> dict:
        return {"name": "LateFusion", "n_styles": self.n_styles, "combine": "geometric mean",
                "members": {k: m.architecture() for k, m in self.members().items()},
                "clip_samples": self.cfg.clip_samples}
