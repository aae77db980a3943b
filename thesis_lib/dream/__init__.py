"""The dreaming wing: the trained net's input optimised instead of its weights (thesis 4.3, 5.3).

Modules, one idea each:

* :mod:`~thesis_lib.dream.settings` -- the defaults of every method (``DREAM``,
  ``TRANSFORM``, ``AUDIO_STYLE``) and :class:`DreamError`; no torch, so ``--help`` is instant;
* :mod:`~thesis_lib.dream.base` -- the shared optimiser base: :func:`freeze`,
  :func:`check_clip`, :func:`minimize_lbfgs` (scipy's L-BFGS-B on a torch loss),
  :func:`finish_audio`;
* :mod:`~thesis_lib.dream.layers` -- layer dreaming (the thesis's objective
  ``½ Σ y²`` with L-BFGS-B, DeepDream's ascent, guided dreams, random-net and
  filter controls);
* :mod:`~thesis_lib.dream.transform` -- inversion, Gatys style transfer, class steering;
* :mod:`~thesis_lib.dream.effects` -- effect steering: a differentiable gain/EQ/drive/compressor
  chain's parameters optimised toward a style, judged by a second model;
* :mod:`~thesis_lib.dream.audio_style` -- style transfer on STFT features;
* :mod:`~thesis_lib.dream.measures` -- neutral measures of the audio produced;
* :mod:`~thesis_lib.dream.figures` -- their figures;
* :mod:`~thesis_lib.dream.report` -- the measured report of every method;
* :mod:`~thesis_lib.dream.cli` -- the ``dream``, ``transform``, ``style-transfer``
  and ``dream-report`` subcommands.

The wing imports the core (``thesis_lib.config``, ``audio``, ``model``, ...)
and never the book. The names of ``base`` and ``layers`` are re-exported here
(and those of ``settings``; imported on first use, so that ``--help`` stays instant):
``from thesis_lib import dream; dream.dream(model, clip, "conv2")``.
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "settings": ("DreamConfig", "DREAM", "METHODS", "DreamError", "TransformConfig", "TRANSFORM",
                 "EffectsConfig", "EFFECTS",
                 "AudioStyleConfig", "AUDIO_STYLE"),
    "base": ("check_clip", "finish_audio", "freeze", "LbfgsOutcome", "cpu_threads", "minimize_lbfgs"),
    "layers": ("load_clip", "Objective", "layer_objective", "guide_objective", "objective_value",
               "DreamResult", "maximize_lbfgs", "maximize_ascent", "stop_reason", "LBFGS_PGTOL", "dream", "guided_dream", "dream_layers",
               "random_net_like", "filter_responses", "response_agreement", "filter_dreams"),
    "transform": (), "effects": (), "audio_style": (), "measures": (), "figures": (), "report": (), "cli": (),
})
