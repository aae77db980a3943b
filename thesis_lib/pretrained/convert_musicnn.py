"""Convert the musicnn authors' TensorFlow checkpoints into ``musicnn-msd.pt`` and ``musicnn-vgg-msd.pt`` (maintainers only).

Why
---
The tagger of :mod:`thesis_lib.musicnn` is published as a TensorFlow 1
checkpoint inside the ``musicnn`` wheel on PyPI (ISC license), whose package
pins numpy < 1.17 and TensorFlow 1 APIs. The project depends on neither: this
script reads the checkpoint once, maps each variable onto the torch port, runs
the authors' own graph (their ``models.py``) and the port on the same
spectrograms, refuses a port that differs, and writes the weights and a small
reference (``tests/data/musicnn_reference.npz``: the inputs and TensorFlow's
outputs) that the test suite checks the shipped weights against.

    python -m venv /tmp/tf && /tmp/tf/bin/pip install "tensorflow-cpu==2.15.*" "numpy<2" torch librosa tqdm
    pip download musicnn==0.1.0 --no-deps -d /tmp/w && unzip /tmp/w/musicnn-0.1.0-py3-none-any.whl -d /tmp/mnn
    /tmp/tf/bin/python -m thesis_lib.pretrained.convert_musicnn --package /tmp/mnn/musicnn
    /tmp/tf/bin/python -m thesis_lib.pretrained.convert_musicnn --package /tmp/mnn/musicnn --model MSD_vgg

(The wheel's ``MSD_vgg`` checkpoint is complete although its ``extractor`` still says
"still training": the authors added the weights and never updated that message.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "data" / "musicnn_reference.npz"
VGG_REFERENCE = REPO / "tests" / "data" / "musicnn_vgg_reference.npz"


def tf_variables(checkpoint_prefix: str) -> dict[str, np.ndarray]:
    """Every trained variable of the checkpoint (the optimiser's slots left out)."""
    from tensorflow.python.training import py_checkpoint_reader

    reader = py_checkpoint_reader.NewCheckpointReader(checkpoint_prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "Adam" not in k and not k.endswith("_power")}


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, np.float32))


def _bn(state: dict, w: dict, prefix: str, k: str) -> None:
    """A TensorFlow batch norm ``k`` -> :class:`~thesis_lib.musicnn.FrozenBatchNorm` ``prefix``."""
    for ours, theirs in (("gamma", "gamma"), ("beta", "beta"), ("mean", "moving_mean"), ("var", "moving_variance")):
        state[f"{prefix}.{ours}"] = _tensor(w[f"{k}/{theirs}"])


def _conv(state: dict, w: dict, prefix: str, k: str, one_d: bool = False) -> None:
    """A TensorFlow convolution ``k`` (kernel ``(kh, kw, in, out)``) -> torch's ``(out, in, kh[, kw])``."""
    kernel = _tensor(w[f"{k}/kernel"])
    state[f"{prefix}.weight"] = kernel[:, :, 0, :].permute(2, 1, 0) if one_d else kernel.permute(3, 2, 0, 1)
    state[f"{prefix}.bias"] = _tensor(w[f"{k}/bias"])


def _dense(state: dict, w: dict, prefix: str, k: str) -> None:
    state[f"{prefix}.weight"] = _tensor(w[f"{k}/kernel"]).T.contiguous()
    state[f"{prefix}.bias"] = _tensor(w[f"{k}/bias"])


def _tf_name(base: str, i: int) -> str:
    """TensorFlow's name of the ``i``-th layer of a kind, in creation order: ``base``, ``base_1``, ..."""
    return base if i == 0 else f"{base}_{i}"


def port_state(w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """TensorFlow's variables (``conv2d_N``, ``batch_normalization_N`` in creation order) -> the port's state dict."""
    state: dict[str, torch.Tensor] = {}
    _bn(state, w, "input_bn", "batch_normalization")
    for i in range(2):
        _conv(state, w, f"timbral.{i}", _tf_name("conv2d", i))
        _bn(state, w, f"timbral_bn.{i}", _tf_name("batch_normalization", i + 1))
    for i in range(3):
        _conv(state, w, f"temporal.{i}", _tf_name("conv2d", i + 2))
        _bn(state, w, f"temporal_bn.{i}", _tf_name("batch_normalization", i + 3))
    for i in range(3):
        _conv(state, w, f"midend.{i}", _tf_name("conv2d", i + 5), one_d=True)
        _bn(state, w, f"midend_bn.{i}", _tf_name("batch_normalization", i + 6))
    _bn(state, w, "pool_bn", "batch_normalization_9")
    _dense(state, w, "dense", "dense")
    _dense(state, w, "tags", "dense_1")
    _bn(state, w, "dense_bn", "batch_normalization_10")
    return state


def port_vgg_state(w: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The VGG tagger's variables (``1CNN``..``5CNN``, ``batch_normalization_N``, ``dense``) -> :class:`MusicnnVGG`'s."""
    state: dict[str, torch.Tensor] = {}
    _bn(state, w, "input_bn", "batch_normalization")
    for i in range(5):
        _conv(state, w, f"convs.{i}", f"{i + 1}CNN")
        _bn(state, w, f"bns.{i}", _tf_name("batch_normalization", i + 1))
    _dense(state, w, "tags", "dense")
    return state


#: Each checkpoint of the wheel this script converts: the tagger kind, its mapping, its test reference.
PORTS = {"MSD_musicnn": ("musicnn", port_state, REFERENCE), "MSD_vgg": ("vgg", port_vgg_state, VGG_REFERENCE)}


def tf_outputs(package: Path, model: str, spec: np.ndarray) -> dict[str, np.ndarray]:
    """The authors' graph restored from their checkpoint, run on ``spec`` ``(B, T, 96)``."""
    import tensorflow as tf

    sys.path.insert(0, str(package.parent))
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    vgg = "vgg" in model
    x = tf.compat.v1.placeholder(tf.float32, [None, spec.shape[1] if vgg else None, spec.shape[2]])  # vgg: fixed
    is_training = tf.compat.v1.placeholder(tf.bool)
    out = models.define_model(x, is_training, model, 50)
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, str(package / model) + "/")
        res = sess.run(out, feed_dict={x: spec, is_training: False})
    if vgg:          # (logits, pool1, ..., pool5); pooled as MusicnnVGG.pooled: per block max then mean
        return {"logits": res[0], "pooled": np.concatenate(
            [np.concatenate([b.max((1, 2)), b.mean((1, 2))], 1) for b in res[1:]], 1)}
    return {"logits": res[0], "penultimate": res[-1],
            "pooled": np.stack([res[7], res[6]], 2).reshape(len(spec), -1)}   # (max, mean) per channel


def reference_spectrograms(seed: int = 0) -> np.ndarray:
    """Two clips' spectrograms: a chord with a beat and noise (not random numbers: a music-like input)."""
    from ..musicnn import SAMPLE_RATE, TaggerSpectrogram

    rng = np.random.default_rng(seed)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220, 277, 330)) / 3
    beat = np.exp(-30 * (t % 0.5)) * rng.standard_normal(len(t))
    clips = np.stack([0.5 * chord + 0.3 * beat, 0.2 * rng.standard_normal(len(t))]).astype(np.float32)
    return TaggerSpectrogram()(torch.from_numpy(clips)).numpy()


def main(argv: list[str] | None = None) -> int:
    from ..musicnn import TAGGERS, tagger_weights
    from . import sha256

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--package", type=Path, required=True, help="the unpacked musicnn package folder (holds MSD_musicnn/)")
    p.add_argument("--model", default="MSD_musicnn", choices=list(PORTS))
    p.add_argument("--out", type=Path, help="default: the package's weights file of that tagger")
    p.add_argument("--reference", type=Path, help="default: tests/data/musicnn[_vgg]_reference.npz")
    a = p.parse_args(argv)
    kind, port, reference = PORTS[a.model]
    a.out = a.out or tagger_weights(kind)[0]
    a.reference = a.reference or reference
    net = TAGGERS[kind]().eval()
    net.load_state_dict(port(tf_variables(str(a.package / a.model) + "/")))
    spec = reference_spectrograms().astype(np.float16).astype(np.float32)   # stored as float16
    theirs = tf_outputs(a.package, a.model, spec)
    with torch.no_grad():
        s = torch.from_numpy(spec)
        ours = {"logits": net(s).numpy(), "pooled": net.pooled(s).numpy()}
        if kind == "musicnn":
            ours["penultimate"] = net.penultimate(s).numpy()
    for k in ours:
        err = float(np.abs(ours[k] - theirs[k]).max() / np.abs(theirs[k]).max())
        print(f"{k}: largest difference {err:.1e} of the largest value")
        if err > 1e-4:
            raise SystemExit(f"the port disagrees with TensorFlow on {k}: {err:.1e}")
    torch.save({k: v.detach().float().contiguous() for k, v in net.state_dict().items()}, a.out)   # 3.2 / 2.4 MB
    a.reference.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.reference, spec=spec.astype(np.float16), **{k: v.astype(np.float32) for k, v in theirs.items()})
    print(f"wrote {a.out} (sha256 {sha256(a.out)}) and {a.reference}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
