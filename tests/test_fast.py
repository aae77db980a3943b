"""The fast training path computes the same function as the plain StyleNet."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thesis_lib import fast
from thesis_lib.config import THESIS
from thesis_lib.data import split_dataset
from thesis_lib.model import StyleNet
from thesis_lib.train import TrainSettings, train

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _grads(model, fn, x, y):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = fn(x)
    F.cross_entropy(out, y).backward()
    return out.detach(), x.grad.detach(), {k: p.grad.detach().clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_fast_forward_matches_reference_outputs_and_gradients(device, dtype, tol):
    torch.manual_seed(0)
    model = StyleNet(3).to(device, dtype).train()
    x = torch.randn(5, 1, THESIS.clip_samples, device=device, dtype=dtype)
    y = torch.tensor([0, 1, 2, 1, 0], device=device)
    ref_out, ref_dx, ref_g = _grads(model, model, x, y)
    fast_out, fast_dx, fast_g = _grads(model, fast.FastStyleNet(model), x, y)
    torch.testing.assert_close(fast_out, ref_out, rtol=tol, atol=tol)
    # gradients relative to their own scale: every parameter and the input waveform
    for name in ref_g:
        scale = ref_g[name].abs().max().clamp_min(1e-12)
        err = (fast_g[name] - ref_g[name]).abs().max() / scale
        assert err < tol * 10, (name, float(err))
    assert (fast_dx - ref_dx).abs().max() / ref_dx.abs().max() < tol * 10
    # eval mode (running statistics) too
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast.fast_forward(model, x), model(x), rtol=tol, atol=tol)


@pytest.mark.parametrize("length,stride,channels,chunk", [(8, 2, 1, 3), (32, 4, 8, 2), (128, 4, 8, 16), (12, 3, 2, 1)])
def test_strided_conv_backward_matches_conv1d(length, stride, channels, chunk, monkeypatch):
    """Frame/window GEMMs give conv1d's gradients for any k = m*s and any chunking of the batch."""
    monkeypatch.setattr(fast, "CHUNK", chunk)
    torch.manual_seed(1)
    x = torch.randn(5, channels, 1003, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, channels, length, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y_ref = F.conv1d(x, w, b, stride)
    g = torch.randn_like(y_ref)
    ref = torch.autograd.grad(y_ref, (x, w, b), g)
    y = fast.StridedConv1d.apply(x, w, b, stride)
    got = torch.autograd.grad(y, (x, w, b), g)
    torch.testing.assert_close(y, y_ref)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r)
    # and torch's own numerical check on a small case
    xs = torch.randn(2, min(channels, 2), 3 * stride + 1, dtype=torch.float64, requires_grad=True)
    ws = torch.randn(2, min(channels, 2), 2 * stride, dtype=torch.float64, requires_grad=True)
    bs = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, d: fast.StridedConv1d.apply(a, c, d, stride), (xs, ws, bs))


def test_fast_wrapper_shares_parameters_and_state_dict():
    model = StyleNet(2)
    wrapped = fast.FastStyleNet(model)
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    assert list(model.state_dict()) == list(StyleNet(2).state_dict())  # checkpoints unchanged


def test_resolve_impl():
    assert fast.resolve_impl("auto", torch.device("cpu")) == "fast"
    assert fast.resolve_impl("reference", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="impl"):
        fast.resolve_impl("turbo", torch.device("cpu"))


def test_training_fast_and_reference_agree(toy_prepared):
    """Same seed, same data: both implementations follow the same loss curve to rounding."""
    sp = split_dataset(toy_prepared, 6, 2, split="clip", seed=0)
    common = dict(epochs=3, learning_rate=0.001, batch_size=4, device="cpu", seed=3)
    a = train(toy_prepared, sp, TrainSettings(impl="reference", **common), progress=False)
    b = train(toy_prepared, sp, TrainSettings(impl="fast", **common), progress=False)
    assert b.metrics["impl"] == "fast" and a.metrics["impl"] == "reference"
    la = np.array([h["train_loss"] for h in a.history])
    lb = np.array([h["train_loss"] for h in b.history])
    np.testing.assert_allclose(lb, la, rtol=1e-3, atol=1e-5)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(vb, va, rtol=1e-3, atol=1e-4, msg=k)
