"""Faster training paths for :class:`~thesis_lib.model.StyleNet` on CPUs and GPUs: same function, same weights.

On a CPU, the convolutions' backward pass runs as matrix products (below). On a CUDA GPU, each
convolution is one matrix product over blocks of output steps, batch norm plain reductions, all
compiled, with the training clips resident on the GPU and each step one CUDA-graph replay
(:class:`ResidentTrainer`, end of this module). Chapter 8 of the book measures both.

Why it exists
-------------
The thesis net has tiny channel counts (1 -> 8 -> 8 -> 8) and long strided
filters (32 and 128 taps, stride 4). The generic convolution kernels that
eager PyTorch calls on a CPU (oneDNN) are fine in the forward pass but very
slow in the backward pass for these shapes: profiling a batch-480 step here
put about three quarters of the time in ``convolution_backward``.

What it does
------------
The inputs of conv2 and conv3 lie *time-major* in memory (each time step's eight channels
together; :func:`time_major`), written so by the compiled batch norms (:func:`relu_norm`); their
outputs, which the batch norms reduce, are channels-first. With time-major input the forward
convolutions run as oneDNN's channels-last kernels (:func:`conv1d_time_major`, 1.1-2.3x faster
than channels-first here), conv1, with its one input channel, as a stride-1 convolution over the
samples' phases (:func:`phase_conv`, 4.6x faster than the strided one), and every convolution whose
filter length is a multiple of its stride (``k = m * s``: 8 = 4*2, 32 = 8*4, 128 = 32*4) gets
its backward pass as well-shaped matrix products (:class:`StridedConv1d`):

* the input *is* a sequence of frames of ``s`` samples: ``Ft[b, n, (r, c)] = x[b, c, n*s + r]``
  is a view of time-major activations, no copy;
* the output gradient is laid out as *windows* of ``m`` consecutive steps:
  ``Dwin[b, n, (j, o)] = dY[b, o, n - j]`` (zero outside; one copy);
* then ``dW = sum_b Ft[b]^T @ Dwin[b]`` (a ``C*s x m*O`` matrix summed over all frames)
  and ``dFt = Dwin @ Wstack`` -- the input gradient, frame by frame, time-major again.

Both products have a long inner (or outer) dimension and 32-256 wide
matrices, which the BLAS runs far closer to peak than the generic kernels.
The work runs on the whole batch at once (chunks only beyond 1 GB of
buffers): fewer, larger operations measured faster here than cache-sized
chunks. :func:`tune_allocator` keeps the freed buffers for the next step.

In training the input needs no gradient, so conv1's input gradient (480 x 40,000 numbers a
step) would only be reduced to the input batch norm's two parameter gradients; both follow from
conv1's weight gradient instead, and the batch norm itself folds into conv1's filters
(:class:`AffineInputConv1d`). Each ReLU and the batch norm after it run as one compiled pass
that also writes the next layer's layout and dtype (:func:`relu_norm`).

With ``precision="bf16"`` (:class:`Bf16StyleNet`) the activations between conv1 and the fc layer
are bfloat16, and the products of conv2, conv3 and the fc layer take bfloat16 operands with
float32 sums; conv1, the batch norms' arithmetic, weights and weight gradients stay float32. CPUs
with bf16 units (AVX-512 BF16, AMX) run those products two to five times faster.

:func:`fast_forward` computes ``model(x)`` with these convolutions and the
model's own parameters (``state_dict`` unchanged, checkpoints compatible).
It is meant for training; ``model.features`` (used by the dreaming code)
stays the plain implementation, although the input gradients here are
exact as well (tested against the reference).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import THESIS
from .runtime import cpu_bf16_units

#: Clips per chunk in the backward pass; 0 (default): as many as fit ``CHUNK_BYTES``.
CHUNK = int(os.environ.get("THESIS_LIB_FAST_CHUNK", "0"))


def windows(dy: torch.Tensor, m: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(B, O, T)`` -> ``(B, T + m - 1, m*O)``: ``[b, n, (j', o)] = dy[b, o, n - (m-1) + j']`` (0 outside),
    in ``dtype`` (default ``dy``'s: the one copy also converts)."""
    b, o, t = dy.shape
    pad = dy.new_zeros(b, t + 2 * (m - 1), o, dtype=dtype or dy.dtype)
    pad[:, m - 1: m - 1 + t].copy_(dy.transpose(1, 2))
    n = t + m - 1
    return pad.as_strided((b, n, m * o), (pad.stride(0), o, 1)).contiguous()


def time_major(x: torch.Tensor) -> bool:
    """Whether ``(B, C, L)`` activations lie time-major in memory (``(B, L, C)``, each time step's
    channels together): the layout in which the CPU path hands conv2 and conv3 their input."""
    return x.shape[1] > 1 and x.transpose(1, 2).is_contiguous()


def conv1d_time_major(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """``F.conv1d`` for time-major ``x``, by oneDNN's channels-last 2-D convolution (whose output is
    time-major too). Measured here for conv2 and conv3: 2.3x faster than the channels-first
    convolution with bfloat16 operands, 1.1-1.4x with float32 ones."""
    w = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    return F.conv2d(x.unsqueeze(2), w, bias, (1, stride)).squeeze(2)


class StridedConv1d(torch.autograd.Function):
    """``F.conv1d(x, w, bias, stride)`` with a frame/window GEMM backward (``k % stride == 0``).

    ``compute`` (``None``: the input's own dtype) is the dtype of the matrix products' operands:
    ``torch.bfloat16`` runs them on a CPU's bf16 units (``precision="bf16"``, see
    :class:`Bf16StyleNet`); the output and the input gradient keep the input's dtype. Time-major
    input (:func:`time_major`) is the fast case: its frames are views and its input gradient comes
    out time-major; the output is channels-first either way, the layout whose statistics the
    compiled batch norm (:func:`relu_norm`) reduces fastest (its backward ran 3x slower on
    time-major input here).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, compute=None):
        ctx.stride, ctx.x_dtype = stride, x.dtype
        op = compute or x.dtype                         # .to() of a tensor already in op is itself
        x = x.to(op)                                    # saved so: the backward's frames convert nothing
        ctx.save_for_backward(x, weight)
        bias = None if bias is None else bias.to(op)
        if time_major(x):
            y = conv1d_time_major(x, weight.to(op), bias, stride).contiguous()
        else:
            y = F.conv1d(x, weight.to(op), bias, stride)
        return y.to(ctx.x_dtype)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        s = ctx.stride
        o, c, k = w.shape
        m = k // s
        b, _, length = x.shape
        t = dy.shape[2]
        n = t + m - 1                                   # frames touched by the output
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if c == 1:
            dy = dy.contiguous()
            dx, dw = _single_channel_backward(x, w, dy, s, need_x, need_w)
            return dx, dw, (dy.sum((0, 2)) if need_b else None), None, None
        op = x.dtype                                    # the operands' dtype (bf16 with compute)
        # Wstack[(j', o), (r, c)] = w[o, c, (m-1-j')*s + r]
        wstack = w.reshape(o, c, m, s).flip(2).permute(2, 0, 3, 1).reshape(m * o, s * c).to(op)
        dw_acc = torch.zeros(s * c, m * o, dtype=w.dtype, device=w.device) if need_w else None
        dx = None
        if need_x:                                      # time-major, like the input of the fast path
            dx = torch.empty(b, length, c, dtype=ctx.x_dtype, device=x.device)
            dx[:, n * s:].zero_()                       # samples no output looked at
        step = _chunk(n * (m * o + 2 * c * s) * x.element_size())
        for lo in range(0, b, step):
            hi = min(b, lo + step)
            win = windows(dy[lo:hi], m, op)             # (cb, n, m*o)
            if need_w:                                  # frames: a view of time-major input
                ft = x[lo:hi].transpose(1, 2).contiguous()[:, : n * s].reshape(hi - lo, n, s * c)
                dw_acc += torch.bmm(ft.transpose(1, 2), win).sum(0, dtype=dw_acc.dtype)
            if need_x:
                dft = win.reshape(-1, m * o) @ wstack   # (cb*n, s*c): time-major samples
                dx[lo:hi, : n * s].copy_(dft.view(hi - lo, n * s, c))
        dw = None
        if need_w:   # dw_acc[(r, c), (j', o)] -> w[o, c, (m-1-j')*s + r]
            dw = dw_acc.reshape(s, c, m, o).flip(2).permute(3, 1, 2, 0).reshape(o, c, k)
        db = dy.sum((0, 2), dtype=w.dtype) if need_b else None
        return (None if dx is None else dx.transpose(1, 2)), dw, db, None, None


#: Working-buffer budget of one chunk when ``CHUNK`` is 0.
CHUNK_BYTES = 1 << 30


def _chunk(bytes_per_clip: int) -> int:
    """Clips per chunk: ``CHUNK`` if set, else as many as fit ``CHUNK_BYTES`` (a whole batch of 480).

    Measured here: few large operations beat many cache-sized ones by 2-3x,
    because on a shared 2-core machine every parallel operation pays for
    waiting on a descheduled thread, whatever its size.
    """
    if CHUNK > 0:
        return CHUNK
    return max(1, CHUNK_BYTES // max(1, bytes_per_clip))


def _single_channel_backward(x, w, dy, s, need_x, need_w):
    """Backward of a one-channel strided convolution (conv1: 1 -> 8, k 8, s 2).

    The weight gradient is the phase convolution's (:func:`phase_conv_weight_grad`); the input
    gradient is ``W^T @ dY`` followed by ``m`` shifted adds (overlap-add).
    """
    o, _, k = w.shape
    b, _, length = x.shape
    t = dy.shape[2]
    m = k // s
    dw = dx = None
    if need_w:
        dw = phase_conv_weight_grad(x, dy, w.shape, s)
    if need_x:
        g = torch.bmm(w[:, 0].t().expand(b, k, o), dy).view(b, m, s, t)   # (B, k, T) as (B, m, s, T)
        dx = torch.zeros_like(x)
        frames_ = dx[:, 0, : (t + m - 1) * s].view(b, t + m - 1, s)  # (B, N, s)
        for j in range(m):
            frames_[:, j: j + t].add_(g[:, j].transpose(1, 2))
    return dx, dw


def frame_shaped(conv: nn.Conv1d) -> bool:
    """Whether both fast paths can rewrite ``conv``: filter length a multiple of the stride
    (``k = m*s``), no padding, no dilation, one group."""
    k, s = conv.kernel_size[0], conv.stride[0]
    return k % s == 0 and conv.padding[0] == 0 and conv.dilation[0] == 1 and conv.groups == 1


def conv1d(x: torch.Tensor, conv: nn.Conv1d, compute: torch.dtype | None = None) -> torch.Tensor:
    """``conv(x)`` through :class:`StridedConv1d` on CPUs where its shapes allow, else the plain module;
    ``compute``: the dtype of its products' operands for layers of several input channels
    (``torch.bfloat16``: :class:`Bf16StyleNet`; CPUs with bf16 dot-product units, AVX-512 BF16 or AMX,
    multiply bf16 matrices two to five times faster than float32 ones); conv1 reads the raw
    samples and keeps the input's dtype."""
    if not frame_shaped(conv) or x.device.type != "cpu":
        return conv(x)
    compute = compute if conv.in_channels > 1 else None
    return StridedConv1d.apply(x, conv.weight, conv.bias, conv.stride[0], compute)


def forward_with(model: nn.Module, x: torch.Tensor, conv, norm=None, time_major: bool = False) -> torch.Tensor:
    """``model(x)`` for a StyleNet, each convolution computed as ``conv(h, module)`` and, when
    ``norm`` is given, each batch norm as ``norm(h, module)``; the model's own parameters.
    ``time_major``: the activations ``h`` are ``(B, T, C)`` instead of ``(B, C, T)``."""
    h = x.unsqueeze(1) if x.dim() == 2 else x
    if time_major:
        h = h.reshape(h.shape[0], -1, 1)                     # (B, 1, L) is (B, L, 1) in memory
    for module in model.body.children():
        if isinstance(module, nn.Sequential) and isinstance(module[0], nn.Conv1d):
            h = conv(h, module[0])
            for rest in list(module)[1:]:
                h = rest(h)
        elif norm is not None and isinstance(module, nn.BatchNorm1d):
            h = norm(h, module)
        else:
            h = module(h)
    if time_major:
        h = h.transpose(1, 2)                                # the model's (C, T) flattening
    return model.out(model.fc(h.flatten(1)))


class AffineInputConv1d(torch.autograd.Function):
    """``conv1d((x - mean) * rstd * gamma + beta, w, b, stride)`` for one input channel whose input
    needs no gradient: the input batch norm folded into conv1.

    The normalised input is never written: the affine map folds into conv1's filters
    (``w * gamma * rstd``) and bias (``b + (beta - gamma * rstd * mean) * sum(w)``), so conv1 reads
    the raw samples. Nor is conv1's input gradient computed (480 x 40,000 numbers per step): the
    batch norm's two parameter gradients follow from conv1's weight gradient. With
    ``G = corr(dy, xhat) = rstd * (corr(dy, x) - mean * db)`` (``corr(dy, x)`` is what ``dW`` needs
    anyway), ``dW = gamma * G + beta * db``, ``d gamma = sum(w * G)`` and
    ``d beta = sum_o db_o * sum_j w_oj``. ``mean`` and ``rstd`` are the batch's statistics (or the
    running ones in eval mode), which carry no gradient when ``x`` carries none. Both directions run
    as oneDNN's channels-last kernels over the input's phases (:func:`phase_conv`; the output then
    copied to channels-first, which the batch norm reduces fastest): conv1's forward pass and weight
    gradient took about 110 ms per batch-480 step here, against 160-190 ms as a strided convolution.
    """

    @staticmethod
    def forward(ctx, x, mean, rstd, gamma, beta, weight, bias, stride):
        ctx.save_for_backward(x, mean, rstd, gamma, beta, weight)
        ctx.stride = stride
        scale = gamma * rstd
        folded_bias = (beta - scale * mean) * weight.sum((1, 2))
        y = phase_conv(x, weight * scale, folded_bias if bias is None else bias + folded_bias, stride)
        return y.contiguous()

    @staticmethod
    def backward(ctx, dy):
        x, mean, rstd, gamma, beta, w = ctx.saved_tensors
        gx = phase_conv_weight_grad(x, dy, w.shape, ctx.stride)
        db = dy.sum((0, 2))
        g = rstd * (gx - mean * db[:, None, None])          # corr(dy, xhat)
        dw = gamma * g + beta * db[:, None, None]
        d_gamma = (w * g).sum().reshape(1)
        d_beta = (db * w.sum((1, 2))).sum().reshape(1)
        return None, None, None, d_gamma, d_beta, dw, db, None


def input_stem(x: torch.Tensor, bn: nn.BatchNorm1d, conv: nn.Conv1d, compiled: bool = True) -> torch.Tensor:
    """``conv(bn(x))`` for the net's first two stages; on a CPU, when ``x`` needs no gradient
    (training), through :class:`AffineInputConv1d`, which folds the batch norm into conv1's
    filters and skips conv1's input gradient (together about 10 % of a training step here).
    ``compiled``: the batch statistics through the compiled reduction (:func:`batch_statistics`)."""
    if (x.requires_grad or x.device.type != "cpu" or x.shape[1] != 1 or not frame_shaped(conv)
            or bn.weight is None):
        return conv1d(bn(x), conv)
    mean, var = batch_statistics(x, bn, compiled=compiled)
    return AffineInputConv1d.apply(x, mean.reshape(1), torch.rsqrt(var + bn.eps).reshape(1),
                                   bn.weight, bn.bias, conv.weight, conv.bias, conv.stride[0])


# --- ReLU and batch norm in one pass -------------------------------------------------------------
#
# Each convolution of the thesis net is followed by a ReLU and a batch norm. Run as separate
# operations they read and write conv1's 480 x 8 x 19,997 activations (307 MB) six times forward
# and backward, which took about a tenth of a CPU training step here; compiled together
# (``torch.compile``), the ReLU, the statistics, the normalisation and their backward pass run as a
# few fused loops. Where no compiler works (``torch.compile`` needs a C++ toolchain on CPUs) or
# ``THESIS_LIB_NO_COMPILE`` is set, the same function runs uncompiled.


def compiler_allowed() -> bool:
    """False where ``THESIS_LIB_NO_COMPILE`` is set: nothing here calls ``torch.compile`` then."""
    return not os.environ.get("THESIS_LIB_NO_COMPILE")


class fused:
    """``fn`` compiled (``torch.compile``) where compiling works on this machine and computes what
    ``fn`` computes, else ``fn`` itself.

    The first argument's batch dimension is symbolic (one set of kernels for every batch size of a
    layer) and its other dimensions are fixed (one compilation per layer: a few per run). With
    every dimension symbolic (``dynamic=True``, as here until 2026-11-27), torch 2.13's CPU kernels
    for these 8-channel batch norms wrote outside their buffers in training: glibc aborted the
    process (``munmap_chunk(): invalid pointer``) for some shapes, and with only the channel count
    fixed, for others; fixed shapes ran clean in every case tried, and a symbolic batch as fast as
    before (a bf16 epoch 6.2-6.6 s here; all fixed: 7.5-8.1 s). ``tests/test_fast.py`` runs the
    training pass in a fresh process at several batch sizes to check.
    The first result for each new input shape is checked against ``fn`` (one extra uncompiled
    evaluation): where they disagree -- with ``ATEN_CPU_CAPABILITY=avx2`` on this AVX-512 machine
    the compiled variance came out half the true one -- it warns and keeps ``fn`` from then on.
    Any failure of the compiler (no C++ toolchain, an unsupported platform) likewise warns once and
    keeps the plain function; an error that the plain function raises as well belongs to the input
    and is raised. ``THESIS_LIB_NO_COMPILE=1`` keeps it plain.
    Compiling takes a few seconds on a process's first call (torch caches the kernels on disk), and
    is set up only then: ``torch.compile`` imports the compiler, 3 s of every process that imports
    this module (each chapter of the book) whether it trains or not.
    """

    UNSET = object()

    def __init__(self, fn):
        self.fn = fn
        self.compiled = fused.UNSET
        self.checked: set[tuple] = set()       # input signatures whose compiled result matched fn's
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        if self.compiled is fused.UNSET:
            self.compiled = torch.compile(self.fn, dynamic=None) if compiler_allowed() else None
        if self.compiled is None:
            return self.fn(*args)
        x = args[0] if args else None
        if torch.is_tensor(x) and x.dim():  # batch free, channels and time fixed (the class's doc says why)
            torch._dynamo.maybe_mark_dynamic(x, 0)
            for d in range(1, x.dim()):
                torch._dynamo.mark_static(x, d)
        try:
            out = self.compiled(*args)
        except Exception as err:                            # noqa: BLE001 - the compiler's, or the input's?
            return self._give_up(args, f"torch.compile failed here ({type(err).__name__}: {str(err)[:200]})")
        key = tuple((tuple(a.shape), a.dtype) if torch.is_tensor(a) else a for a in args)
        if key not in self.checked:
            low = any(torch.is_tensor(a) and a.dtype in _HALF for a in args)   # bf16 activations in
            with torch.no_grad():
                err = _disagreement(out, self.fn(*args), low)
            if err is not None:
                return self._give_up(args, f"the compiled {self.fn.__name__} disagreed with the plain "
                                           f"function here ({err})")
            self.checked.add(key)
        return out

    def _give_up(self, args, why: str):
        out = self.fn(*args)                                # a bad input fails here too, with its own error
        self.compiled = None
        warnings.warn(f"{why}; {self.fn.__name__} runs uncompiled from now on (same results, slower)")
        return out


_HALF = (torch.bfloat16, torch.float16)


def _disagreement(got, want, low_precision: bool = False) -> str | None:
    """Where the tensors of ``got`` and ``want`` (tuples, or one tensor) differ by more than
    rounding allows -- relative to the largest magnitude among them (a mean near zero is judged on
    the scale of its variance), 1e-3 in float32, 3e-2 where an input or the output is 16-bit (the
    compiler computes a bf16 input's statistics in float32, the plain function in bf16: 0.7 % apart
    here) -- a few words saying how much; else ``None``."""
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    scale = max((float(b.detach().abs().max()) for b in want if b.numel()), default=0.0)
    for i, (a, b) in enumerate(zip(got, want)):
        tol = 3e-2 if low_precision or a.dtype in _HALF else 1e-3
        a, b = a.detach().double(), b.detach().double()
        diff = float((a - b).abs().max()) if b.numel() else 0.0
        if a.shape != b.shape or not diff <= tol * max(scale, 1e-6):
            return f"output {i}: largest difference {diff:.3g} against magnitudes up to {scale:.3g}"
    return None


@fused
def channel_statistics(x: torch.Tensor, channel_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, biased var)`` of each channel of ``x`` over all its other dimensions."""
    var, mean = torch.var_mean(x, dim=[d for d in range(x.dim()) if d != channel_dim], correction=0)
    return mean, var


@fused
def relu_norm_statistics(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                         dtype: torch.dtype, time_major: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch_norm(relu(h))`` with the batch's statistics over all but dim 1: ``(y, mean, var)``,
    ``var`` biased (what normalises), for the running averages. ``y`` in ``dtype``, time-major in
    memory when ``time_major`` (written so by the same loop)."""
    h = torch.relu(h)
    var, mean = torch.var_mean(h, dim=[d for d in range(h.dim()) if d != 1], correction=0)
    shape = [1, -1] + [1] * (h.dim() - 2)
    scale = (weight * torch.rsqrt(var + eps)).view(shape)
    y = ((h - mean.view(shape)) * scale + bias.view(shape)).to(dtype)
    return (y.transpose(1, 2).contiguous().transpose(1, 2) if time_major else y), mean, var


def relu_norm(h: torch.Tensor, bn: nn.BatchNorm1d, dtype: torch.dtype | None = None,
              time_major: bool = False, compiled: bool = True) -> torch.Tensor:
    """``bn(relu(h))``: in training mode on a CPU one fused pass (:func:`relu_norm_statistics`,
    compiled unless ``compiled`` is false), with the running averages updated as
    :class:`torch.nn.BatchNorm1d` does; the result in ``dtype`` (default: the parameters') and, if
    ``time_major``, time-major in memory -- what the next convolution reads fastest."""
    dtype = dtype or (h.dtype if bn.weight is None else bn.weight.dtype)
    if not bn.training or h.device.type != "cpu" or bn.weight is None:
        return bn(torch.relu(h).to(bn.running_mean.dtype)).to(dtype)
    fn = relu_norm_statistics if compiled else relu_norm_statistics.fn
    y, mean, var = fn(h, bn.weight, bn.bias, bn.eps, dtype, time_major)
    update_running_statistics(bn, mean, var, h.numel() // h.shape[1])
    return y


def fast_forward(model, x: torch.Tensor, compute: torch.dtype | None = None, compiled: bool = True) -> torch.Tensor:
    """``model(x)`` computed with the fast convolutions; same parameters, same result.

    The convolutions read time-major activations in ``compute`` (default: float32), which
    is the dtype of conv2's and later convolutions' products (:func:`conv1d`); the last batch norm
    hands the fc layer float32 in the model's own layout. ``compiled``: a CPU's batch norms through
    the compiled passes (:class:`fused`); false for runs too short to pay for compiling them
    (:func:`compile_pays`)."""
    convs, norms = model.conv_layers(), model.norm_layers()
    h = input_stem(x.unsqueeze(1) if x.dim() == 2 else x, norms[0], convs[0], compiled)
    for conv, bn in zip(convs[1:], norms[1:]):
        h = conv1d(relu_norm(h, bn, compute, time_major=frame_shaped(conv), compiled=compiled), conv, compute)
    h = relu_norm(h, norms[-1], compiled=compiled).flatten(1)
    if compute is not None and compute != h.dtype:     # bf16: the fc layer's products as well
        with torch.autocast(h.device.type, dtype=compute):
            h = model.fc(h)
    else:
        h = model.fc(h)
    return model.out(h.to(model.out.weight.dtype))


class FastStyleNet(nn.Module):
    """Wraps a :class:`StyleNet` so that calling it runs :func:`fast_forward`.

    Holds the very same parameters (no copies): optimising the wrapper trains
    the wrapped model, whose ``state_dict`` is what gets saved. ``compiled``: whether a CPU's batch
    norms run through the compiled passes (:func:`compile_pays`); the CUDA wrappers below ignore it
    (there :class:`ResidentTrainer` compiles the whole step, or nothing).
    """

    forward_fn = staticmethod(fast_forward)

    def __init__(self, model: nn.Module, compiled: bool = True):
        super().__init__()
        self.net = model
        self.compiled = compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(self.net, x, compiled=self.compiled)


def bf16_forward(model, x: torch.Tensor, compiled: bool = True) -> torch.Tensor:
    """``model(x)`` with bfloat16 operands in the products of conv2, conv3 and the fc layer, and
    bfloat16 activations between them; conv1, the batch norms' arithmetic, the output layer and
    every weight and weight gradient float32."""
    return fast_forward(model, x, torch.bfloat16, compiled)


class Bf16StyleNet(FastStyleNet):
    """:class:`FastStyleNet` with bfloat16 matrix products (CPU ``precision="bf16"``, :func:`bf16_forward`)."""

    forward_fn = staticmethod(bf16_forward)


IMPLS = ("auto", "fast", "reference")


def resolve_impl(impl: str, device: torch.device) -> str:
    """``auto`` -> ``fast`` on CPUs and CUDA GPUs (measured faster on both), ``reference`` elsewhere (MPS)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
    if impl == "auto":
        return "fast" if torch.device(device).type in ("cpu", "cuda") else "reference"
    return impl


#: ``fp32``: torch's defaults (TF32 in cuDNN's convolutions, full float32 matrix products);
#: ``tf32``: TF32 matrix products on CUDA GPUs (float32 elsewhere); ``bf16``: bfloat16 products
#: (CUDA: autocast; CPU: :class:`Bf16StyleNet`); ``auto``: see :func:`resolve_precision`.
PRECISIONS = ("fp32", "tf32", "bf16")


def resolve_precision(precision: str, impl: str, device: torch.device) -> str:
    """The arithmetic a training run really uses: ``auto`` -> ``bf16`` where the hardware has bfloat16
    units and the fast path runs, else ``fp32``; an explicit choice stays.

    Why ``bf16`` by default where it is native: the thesis's run reaches the same test accuracy in
    bf16 as in float32 (``reproduce`` on the built-in data: 0.950 / 0.954 / 0.956 against 0.950 /
    0.952 / 0.948 in float32 on this project's CPU; 0.946 against 0.944 on an H100) in 60 % of the
    time on a CPU with AVX-512 BF16 and 57 % on an H100 (chapter 8, README "Speed and scale").
    Without bf16 units (older CPUs, GPUs before Ampere such as Colab's T4) bf16 is emulated and
    slower, so ``auto`` keeps float32 there, as it does for the plain module (``impl="reference"``).
    """
    if precision not in PRECISIONS + ("auto",):
        raise ValueError(f"precision must be one of {PRECISIONS + ('auto',)}, not {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if resolve_impl(impl, device) != "fast":
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_units() else "fp32"
    return "fp32"


_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed activation memory in the process instead of returning it to the system.

    glibc serves every allocation above a threshold (at most 32 MB) with a
    fresh ``mmap`` and unmaps it on free, so each training step maps its
    hundreds of MB of activations anew and pays a page fault per 4 kB page
    on first touch (measured here: ~1.4 million faults per batch-160 step,
    a third of the step's CPU time on this virtual machine). With ``mmap``
    off for ``malloc`` and a high trim threshold, the freed blocks stay in
    the heap and the next step reuses them: faults fall about fourfold.
    The process keeps its peak memory until exit. Linux/glibc only; a no-op
    elsewhere or when ``THESIS_LIB_NO_MALLOPT`` is set. Returns whether it applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("THESIS_LIB_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        ok = (libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
              and libc.mallopt(m_top_pad, 64 << 20) == 1)
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def training_module(model: nn.Module, impl: str, device: torch.device, precision: str = "auto",
                    compiled: bool = True) -> nn.Module:
    """The module a training step calls: the fast wrapper or the model itself.

    Choosing the fast path on a CPU also applies :func:`tune_allocator`; there ``precision="bf16"``
    runs the activations and products from conv2 to the fc layer in bfloat16 (:class:`Bf16StyleNet`),
    ``"tf32"`` (a GPU format) is float32, and ``compiled`` says whether its batch norms run through
    the compiled passes (``train`` asks :func:`compile_pays`).
    """
    precision = resolve_precision(precision, impl, device)
    if resolve_impl(impl, device) != "fast":
        return model
    if torch.device(device).type == "cuda":
        return PhaseStyleNet(model)
    tune_allocator()
    return (Bf16StyleNet if precision == "bf16" else FastStyleNet)(model, compiled)


# --- the CUDA training path (measured on one H100, chapter 8 and the README's "GPU") -------------
#
# Profiling the plain module on an H100 put 77 % of an epoch in cuDNN's batch-norm kernels: with
# only 8 channels, its per-channel reductions over 480 x 19,997 values leave the GPU idle. Exact
# rewrites and fewer kernel launches bring a thesis epoch from 0.71 s (data already on the GPU)
# to 0.080 s in float32 and 0.046 s in bf16:
#   1. batch norm by plain reductions (``torch.var_mean``), which the compiler fuses with the ReLU;
#   2. each strided convolution (k = m*s) as one matrix product over blocks of output steps, on
#      time-major activations (``block_conv1d``, below): tensor cores instead of cuDNN's kernels for
#      8 channels. GPUs without TF32/bf16 tensor cores (before Ampere) keep the older rewrite, a
#      stride-1 convolution over ``s`` phase channels run by cuDNN (``phase_conv1d``);
#   3. ``torch.compile`` of that forward pass, and one CUDA graph for the whole training step
#      (batch gather, forward, backward, Nesterov update) with the training clips resident on the
#      GPU: an epoch is ten graph replays and one host synchronisation;
#   4. optionally TF32 matrix products (``precision="tf32"``) or bf16 autocast (``"bf16"``).


def phase_conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(x)`` for a strided convolution with ``k = m*s``, as a stride-1 convolution over phases
    (:func:`phase_conv`)."""
    return phase_conv(x, conv.weight, conv.bias, conv.stride[0])


def phase_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride)`` (``k = m*s``) as a stride-1 convolution over phases.

    Sample ``n*s + r`` of channel ``c`` becomes sample ``n`` of channel ``(c, r)``, and filter tap
    ``j*s + r`` becomes tap ``j`` of that channel: the same sums, in a shape (``C*s`` channels,
    ``m`` taps, stride 1) that GPU convolution kernels run far faster, and so do oneDNN's on a CPU
    for conv1 (one input channel: the phases are a view of the samples; 4.6x faster here). Exact,
    not an approximation; the output is time-major in memory (channels-last).
    """
    o, c, k = weight.shape
    m, t = k // stride, (x.shape[2] - k) // stride + 1
    return F.conv2d(phase_frames(x, stride, t + m - 1), phase_weight(weight, stride), bias).squeeze(2)


def phase_frames(x: torch.Tensor, s: int, n: int) -> torch.Tensor:
    """``(B, C, L)`` -> the ``n`` frames of ``s`` samples as a channels-last ``(B, C*s, 1, n)`` image:
    ``[b, (c, r), 0, i] = x[b, c, i*s + r]`` (a view for one channel and ``L = n*s``)."""
    b, c, _ = x.shape
    frames = x[:, :, : n * s].reshape(b, c, n, s).permute(0, 1, 3, 2)
    return frames.reshape(b, c * s, 1, n).contiguous(memory_format=torch.channels_last)


def phase_weight(weight: torch.Tensor, s: int) -> torch.Tensor:
    """``(O, C, m*s)`` filters -> the phase convolution's ``(O, C*s, 1, m)``: ``[o, (c, r), 0, j] = w[o, c, j*s + r]``."""
    o, c, k = weight.shape
    w = weight.reshape(o, c, k // s, s).permute(0, 1, 3, 2).reshape(o, c * s, 1, k // s)
    return w.contiguous(memory_format=torch.channels_last)


def phase_weight_grad(grad: torch.Tensor, c: int) -> torch.Tensor:
    """The inverse of :func:`phase_weight`: ``(O, C*s, 1, m)`` -> ``(O, C, m*s)``."""
    o, cs, _, m = grad.shape
    return grad.reshape(o, c, cs // c, m).permute(0, 1, 3, 2).reshape(o, c, m * (cs // c))


def phase_conv_weight_grad(x: torch.Tensor, dy: torch.Tensor, shape: torch.Size, stride: int) -> torch.Tensor:
    """The gradient of ``F.conv1d(x, weight, stride=stride)``'s ``weight`` (of ``shape``, ``k = m*s``)
    from the output gradient ``dy``, through the phase convolution (:func:`phase_conv`): for conv1,
    with its one input channel, 30 ms per batch-480 step here against 73-102 ms as a strided one."""
    o, c, k = shape
    m = k // stride
    dy4 = dy.unsqueeze(2).contiguous(memory_format=torch.channels_last)   # a view when time-major
    frames = phase_frames(x, stride, dy.shape[2] + m - 1)
    return phase_weight_grad(torch.nn.grad.conv2d_weight(frames, (o, c * stride, 1, m), dy4), c)


def batch_statistics(x: torch.Tensor, bn: nn.BatchNorm1d, channel_dim: int = 1,
                     compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, var)`` that ``bn`` normalises ``x`` with: the batch's (running averages updated as
    :class:`torch.nn.BatchNorm1d` does) in training mode, the running ones in eval mode.
    ``compiled``: through the compiled :func:`channel_statistics` (eager ``var_mean`` reads about
    1.4 GB/s on this project's CPU, the compiled reduction ten times faster)."""
    if not bn.training:
        return bn.running_mean, bn.running_var
    mean, var = (channel_statistics if compiled else channel_statistics.fn)(x, channel_dim)
    update_running_statistics(bn, mean, var, x.numel() // x.shape[channel_dim])
    return mean, var


def update_running_statistics(bn: nn.BatchNorm1d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """Move ``bn``'s running averages towards a batch's ``mean`` and biased ``var`` over ``n``
    values per channel, as :class:`torch.nn.BatchNorm1d` does: by ``bn.momentum`` (cumulatively
    when it is ``None``), with the unbiased variance."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        rate = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
        bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), rate)
        bn.running_var.lerp_(var.detach().to(bn.running_var.dtype) * (n / max(n - 1, 1)), rate)


def plain_batch_norm(x: torch.Tensor, bn: nn.BatchNorm1d, channel_dim: int = 1) -> torch.Tensor:
    """``bn(x)`` by plain reductions: the same function and the same running-statistics update.

    In training mode the statistics of the batch normalise it and the running averages move by
    ``bn.momentum`` (or cumulatively when it is ``None``), with the unbiased variance, as
    :class:`torch.nn.BatchNorm1d` does; in eval mode the running statistics normalise.
    ``channel_dim`` 2 takes time-major ``(B, T, C)`` input (:func:`block_forward`).
    """
    shape = [1] * x.dim()
    shape[channel_dim] = x.shape[channel_dim]
    mean, var = batch_statistics(x, bn, channel_dim)
    scale = bn.weight * torch.rsqrt(var + bn.eps)
    return x * scale.view(shape) + (bn.bias - mean * scale).view(shape)


def _phase_or_plain(h: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    return phase_conv1d(h, conv) if frame_shaped(conv) else conv(h)


def phase_forward(model: nn.Module, x: torch.Tensor, compiled: bool = True) -> torch.Tensor:
    """``model(x)`` for a :class:`~thesis_lib.model.StyleNet` through :func:`phase_conv1d` and
    :func:`plain_batch_norm`; the model's own parameters and buffers, the same result.
    ``compiled`` (every wrapper's forward takes it) is unused: on CUDA :class:`ResidentTrainer`
    compiles the whole step or nothing."""
    return forward_with(model, x, _phase_or_plain, plain_batch_norm)


class PhaseStyleNet(FastStyleNet):
    """Wraps a StyleNet so that calling it runs :func:`phase_forward` (same parameters, no copies)."""

    forward_fn = staticmethod(phase_forward)


# --- time-major block GEMMs: each convolution one matrix product on tensor cores ------------------
#
# cuDNN runs the phase convolutions above at a few TFLOP/s: with 8 output channels its kernels
# cannot fill the tensor cores. Kept time-major (``(B, T, C)``), a strided convolution with
# ``k = m*s`` becomes one matrix product over *blocks* of ``G = m`` output steps:
#   super-frames ``F[b, i, (g, r, c)] = h[b, (i*G + g)*s + r, c]``  (a free view of the activations),
#   rows ``[F[b, i], F[b, i + 1]]``  (two neighbouring super-frames hold every frame a block reads),
#   ``Y[b, i, (u, o)] = rows @ W_blk^T`` with ``W_blk[(u, o), (q, r, c)] = w[o, c, (q - u)*s + r]``
#   (zero where ``q - u`` is not a tap), and ``Y`` *is* the output ``y[b, i*G + u, o]``.
# Half of ``W_blk`` is zeros (twice the direct FLOPs), but the product has 2*G*s*C inner
# (16, 512, 2048) and G*O outer (32, 64, 256) columns, a shape tensor cores run well, and nothing
# larger than twice the input is written. Measured on an H100: README "GPU" (chapter 8 quotes it).


def block_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``W_blk`` ``(G*O, 2*G*s*C)`` of a ``(O, C, m*s)`` filter bank, ``G = m``: row ``(u, o)`` holds
    filter ``o`` shifted by ``u`` frames (frame ``q`` of the two super-frames meets tap ``q - u``)."""
    o, c, k = weight.shape
    m = k // stride
    taps = weight.reshape(o, c, m, stride).permute(0, 2, 3, 1)          # [o, j, r, c]
    shifted = [F.pad(taps, (0, 0, 0, 0, u, m - u)) for u in range(m)]  # [o, q = j + u, r, c], q < 2m
    return torch.stack(shifted).reshape(m * o, 2 * m * stride * c)


def block_conv1d(h: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` on time-major ``h`` ``(B, N, C)`` -> ``(B, T, O)``: one matrix product (see above)."""
    b, n, c = h.shape
    o, _, k = conv.weight.shape
    s = conv.stride[0]
    m, t = k // s, (n - k) // s + 1
    blocks = -(-t // m)                                     # blocks of m output steps
    span = (blocks + 1) * m * s                             # samples the super-frames cover
    h = F.pad(h, (0, 0, 0, span - n)) if span > n else h[:, :span]   # zeros only reach dropped steps
    frames = h.reshape(b, blocks + 1, m * s * c)
    rows = torch.cat([frames[:, :-1], frames[:, 1:]], dim=2)
    y = (rows @ block_weight(conv.weight, s).t()).reshape(b, blocks * m, o)[:, :t]
    return y + conv.bias if conv.bias is not None else y


def _block_or_plain(h: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    return block_conv1d(h, conv) if frame_shaped(conv) else conv(h.transpose(1, 2)).transpose(1, 2)


def _time_major_norm(h: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    return plain_batch_norm(h, bn, channel_dim=2)


def block_forward(model: nn.Module, x: torch.Tensor, compiled: bool = True) -> torch.Tensor:
    """``model(x)`` for a :class:`~thesis_lib.model.StyleNet` with every activation time-major,
    the convolutions by :func:`block_conv1d` and batch norm by :func:`plain_batch_norm`
    (``compiled`` unused, as in :func:`phase_forward`)."""
    return forward_with(model, x, _block_or_plain, _time_major_norm, time_major=True)


class BlockStyleNet(FastStyleNet):
    """Wraps a StyleNet so that calling it runs :func:`block_forward` (same parameters, no copies)."""

    forward_fn = staticmethod(block_forward)


#: The convolution rewrites :class:`ResidentTrainer` can run: cuDNN over phase channels, or block GEMMs.
CONVS = {"phase": PhaseStyleNet, "blocks": BlockStyleNet}


def default_convs(device: torch.device) -> str:
    """``blocks`` where matrix products run on TF32/bf16 tensor cores (CUDA compute capability 8 and
    up: measured faster than ``phase`` on an H100 in every precision), ``phase`` on older GPUs, whose
    float32 products would pay the blocks' doubled FLOPs on plain cores (not measured), and
    ``blocks`` off CUDA (only the tests run the trainer there)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        return "phase"
    return "blocks"


#: Clips a training run passes through the net (epochs x training clips) from which compiling the
#: CUDA step pays. Measured on an H100 (bf16 block path, thesis clips, both under a CUDA graph): the
#: compiled step takes 0.046 s per epoch of 4,800 clips, the eager one 0.120 s, so compiling saves
#: about 15 microseconds a clip, and costs 30 s on a fresh machine (7 s from torch's disk cache):
#: it pays after 0.5 to 2 million clips. ``reproduce`` passes 96,000 and runs eager: 20 epochs in
#: 3.1 s instead of 30.7 s.
COMPILE_PAYS_AFTER_CLIPS = 1_000_000

#: The same for a CPU's compiled batch norms (:class:`fused`). Measured on this project's 2-core
#: CPU (thesis clips, batch 480): an epoch of 4,800 clips takes 10.4 s compiled against 20.2 s
#: uncompiled in float32, 6.2 against 19.9 s in bf16 -- 2 to 3 ms saved a clip -- and compiling costs
#: about 18 s with an empty compiler cache, 3 to 5 s from torch's disk cache: it pays after about
#: 10,000 clips even from cold. On a 16-core Xeon (the GPU machine's, 2026-11-27) a test that
#: trains the thesis net on a few dozen clips took 63 to 93 s, nearly all of it compiling.
CPU_COMPILE_PAYS_AFTER_CLIPS = 10_000


def compile_threshold(clip_samples: int = THESIS.clip_samples, device: str | torch.device = "cuda") -> int:
    """Clips of ``clip_samples`` a run on ``device`` must pass through the net for compiling its step
    to pay: :data:`COMPILE_PAYS_AFTER_CLIPS` (CUDA) or :data:`CPU_COMPILE_PAYS_AFTER_CLIPS` counts the
    thesis's 5-second clips at 8 kHz, and the saving grows with the samples a clip has."""
    after = CPU_COMPILE_PAYS_AFTER_CLIPS if torch.device(device).type == "cpu" else COMPILE_PAYS_AFTER_CLIPS
    return round(after * THESIS.clip_samples / clip_samples)


def compile_pays(clips_to_train: int, clip_samples: int = THESIS.clip_samples,
                 device: str | torch.device = "cuda") -> bool:
    """Whether a run on ``device`` that passes ``clips_to_train`` clips of ``clip_samples`` through the
    net should compile its step (:func:`compile_threshold`; never where :func:`compiler_allowed` says no)."""
    return clips_to_train >= compile_threshold(clip_samples, device) and compiler_allowed()


def step_note(compiled: bool, passes: int, clip_samples: int, device: str | torch.device) -> str:
    """The log's word on how the training step runs: compiled, or uncompiled and why
    (:func:`compile_pays`)."""
    if compiled:
        return "the training step runs compiled"
    return (f"the training step runs uncompiled (compiling pays from "
            f"{compile_threshold(clip_samples, device):,} clips trained, this run {passes:,})")


def fits_on_device(n_clips: int, clip_samples: int, device: torch.device, share: float = 0.4) -> bool:
    """Whether ``n_clips`` float32 clips take at most ``share`` of the GPU's free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return n_clips * clip_samples * 4 <= share * free


@contextlib.contextmanager
def _tf32_matmuls(on: bool):
    """TF32 for float32 matrix products inside the block when ``on`` (restored after)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = saved or on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


class ResidentTrainer:
    """Epochs over training clips held on the device, each step one CUDA-graph replay.

    The clips and labels are copied to the device once. An epoch copies its shuffled order (drawn
    on the host from the caller's generator, as :func:`~thesis_lib.train.train_epoch` draws it)
    and replays the captured step once per full batch; a last partial batch runs uncaptured. The
    losses are summed on the device, so the host waits once per epoch.

    ``compile`` and ``graph`` default to on for CUDA and off elsewhere (the tests run this class
    on CPUs too: same arithmetic, no compiler, no graphs); ``THESIS_LIB_NO_COMPILE=1`` turns the
    compiler off here too, as for :class:`fused`. ``train`` compiles only runs long enough for it
    to pay (:func:`compile_pays`); ``bench`` times the compiled step. Capturing needs a few
    warm-up steps; they run on copies of the weights and optimiser state, which are then restored, so the
    training trajectory is the one the reference path would take. No autograd graph of the
    model may be alive when the first epoch starts (drop any earlier loss): capture fails otherwise.
    """

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, clips, labels, batch_size: int,
                 device: torch.device, compile: bool | None = None, graph: bool | None = None,
                 precision: str = "fp32", convs: str = "auto"):
        cuda = device.type == "cuda"
        self.model, self.opt, self.device, self.batch = model, opt, device, batch_size
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        convs = default_convs(device) if convs == "auto" else convs
        if convs not in CONVS:
            raise ValueError(f"convs must be 'auto' or one of {sorted(CONVS)}, not {convs!r}")
        self.convs = convs
        self.amp, self.tf32 = precision == "bf16", precision == "tf32"
        self.x = _upload(clips, device).unsqueeze(1)
        self.y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(device)
        self.eager = CONVS[convs](model)
        if compile is None:
            compile = cuda and compiler_allowed()
        self.compiled = bool(compile)
        self.net = torch.compile(self.eager) if compile else self.eager
        self.use_graph = cuda if graph is None else graph
        self.xb = torch.empty((batch_size, *self.x.shape[1:]), device=device)
        self.yb = torch.empty(batch_size, dtype=torch.long, device=device)
        self.order = torch.empty(len(self.y), dtype=torch.long, device=device)
        self.graph = None

    def _step(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp), _tf32_matmuls(self.tf32):
            loss = F.cross_entropy(net(x), y)
            self.opt.zero_grad(set_to_none=False)
            loss.backward()
        self.opt.step()
        return loss.detach()

    def _capture(self) -> None:
        """Warm up (compilation, lazily created optimiser state) and capture one full step."""
        saved = _snapshot(self.model, self.opt)
        self.xb.copy_(self.x[: self.batch]); self.yb.copy_(self.y[: self.batch])
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step(self.net, self.xb, self.yb)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self._step(self.net, self.xb, self.yb)
        _restore(self.model, self.opt, saved)

    def epoch(self, rng: np.random.Generator) -> float:
        """One pass over the clips in the order ``rng.permutation`` gives; the mean training loss."""
        self.model.train()
        n = len(self.y)
        self.order.copy_(torch.from_numpy(rng.permutation(n)))
        if self.use_graph and self.graph is None and n >= self.batch:
            self._capture()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        full = n // self.batch
        for i in range(full):
            pick = self.order[i * self.batch:(i + 1) * self.batch]
            if self.graph is not None:
                torch.index_select(self.x, 0, pick, out=self.xb)
                torch.index_select(self.y, 0, pick, out=self.yb)
                self.graph.replay()
                total += self.static_loss * self.batch
            else:
                total += self._step(self.net, self.x[pick], self.y[pick]) * self.batch
        if n % self.batch:
            pick = self.order[full * self.batch:]
            total += self._step(self.eager, self.x[pick], self.y[pick]) * len(pick)
        return float(total) / max(n, 1)


def _upload(clips, device: torch.device, chunk: int = 256) -> torch.Tensor:
    """The clips as one float32 tensor on ``device``, copied ``chunk`` clips at a time: a read-only
    memory map is never wrapped whole (torch warns about that) nor copied whole on the host."""
    n = len(clips)
    out = torch.empty((n, *np.shape(clips)[1:]), dtype=torch.float32, device=device)
    for lo in range(0, n, chunk):
        out[lo:lo + chunk].copy_(torch.from_numpy(np.array(clips[lo:lo + chunk], dtype=np.float32)))
    return out


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for p, s in opt.state.items()}
    return params, state


def _restore(model: nn.Module, opt: torch.optim.Optimizer, saved: tuple[dict, dict]) -> None:
    """Put back weights and optimiser state *in place*, so captured graphs keep their addresses."""
    params, state = saved
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(params[k])
        for p, s in opt.state.items():
            before = state.get(id(p))
            for k, v in s.items():
                if torch.is_tensor(v):
                    if before is None or k not in before:
                        v.zero_()   # created by the warm-up: a zero velocity is SGD's start
                    else:
                        v.copy_(before[k])
