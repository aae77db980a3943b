"""thesis_lib: the library behind the book *Hearing Music Style with a Raw-Waveform CNN*.

It reproduces and extends S. Geng, *Music Style Classification and
Transformation using Convolutional Neural Network* (University of Miami, 2016).
One module per idea: :mod:`~thesis_lib.config` (every thesis number),
:mod:`~thesis_lib.audio` (loading and pre-processing one track),
:mod:`~thesis_lib.data` (datasets, caching, splits), :mod:`~thesis_lib.synth`
(the built-in synthetic styles), :mod:`~thesis_lib.model` (the network),
:mod:`~thesis_lib.train` (training and evaluation),
:mod:`~thesis_lib.checkpoint` (saving and loading), :mod:`~thesis_lib.plots`
(figures) and :mod:`~thesis_lib.reproduce` (the first experiment end to end).
"""

from .config import THESIS, TRAIN_DEFAULTS, ThesisConfig

__version__ = "0.1.0"
__all__ = ["THESIS", "TRAIN_DEFAULTS", "ThesisConfig", "__version__"]
