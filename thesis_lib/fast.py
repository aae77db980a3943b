"""A faster training path for :class:`~thesis_lib.model.StyleNet`: same function, same weights.

Why it exists
-------------
The thesis net has tiny channel counts (1 -> 8 -> 8 -> 8) and long strided
filters (32 and 128 taps, stride 4). The generic convolution kernels that
eager PyTorch calls on a CPU (oneDNN) are fine in the forward pass but very
slow in the backward pass for these shapes: profiling a batch-480 step here
put about three quarters of the time in ``convolution_backward``.

What it does
------------
Every convolution whose filter length is a multiple of its stride
(``k = m * s``: 8 = 4*2, 32 = 8*4, 128 = 32*4) is rewritten, for its
backward pass, as two well-shaped matrix multiplications:

* the input is viewed as *frames* of ``s`` samples, time-major:
  ``Ft[b, n, (c, r)] = x[b, c, n*s + r]`` (one copy of the input);
* the output gradient is laid out as *windows* of ``m`` consecutive steps:
  ``Dwin[b, n, (j, o)] = dY[b, o, n - j]`` (zero outside);
* then ``dW = Ft^T @ Dwin`` (a ``C*s x m*O`` matrix summed over all frames)
  and ``dFt = Dwin @ Wstack`` -- the input gradient, frame by frame.

Both products have a long inner (or outer) dimension and 32-256 wide
matrices, which the BLAS runs far closer to peak than the generic kernels.
The work runs on the whole batch at once (chunks only beyond 1 GB of
buffers): fewer, larger operations measured faster here than cache-sized
chunks. :func:`tune_allocator` keeps the freed buffers for the next step. The forward pass keeps oneDNN's convolution, which is
already efficient, or uses the same frame trick where that measures faster.

:func:`fast_forward` computes ``model(x)`` with these convolutions and the
model's own parameters (``state_dict`` unchanged, checkpoints compatible).
It is meant for training; ``model.features`` (used by the dreaming code)
stays the plain implementation, although the input gradients here are
exact as well (tested against the reference).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

#: Clips per chunk in the backward pass; 0 (default): as many as fit ``CHUNK_BYTES``.
CHUNK = int(os.environ.get("THESIS_LIB_FAST_CHUNK", "0"))


def frames(x: torch.Tensor, s: int, n: int) -> torch.Tensor:
    """``(B, C, L)`` -> time-major frames ``(B, n, C*s)``: ``[b, i, (c, r)] = x[b, c, i*s + r]``."""
    b, c, _ = x.shape
    return x[:, :, : n * s].reshape(b, c, n, s).permute(0, 2, 1, 3).reshape(b, n, c * s)


def windows(dy: torch.Tensor, m: int) -> torch.Tensor:
    """``(B, O, T)`` -> ``(B, T + m - 1, m*O)``: ``[b, n, (j', o)] = dy[b, o, n - (m-1) + j']`` (0 outside)."""
    b, o, t = dy.shape
    pad = dy.new_zeros(b, t + 2 * (m - 1), o)
    pad[:, m - 1: m - 1 + t].copy_(dy.transpose(1, 2))
    n = t + m - 1
    return pad.as_strided((b, n, m * o), (pad.stride(0), o, 1)).contiguous()


class StridedConv1d(torch.autograd.Function):
    """``F.conv1d(x, w, bias, stride)`` with a frame/window GEMM backward (``k % stride == 0``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride):
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return F.conv1d(x, weight, bias, stride)

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
        dy = dy.contiguous()
        if c == 1:
            dx, dw = _single_channel_backward(x, w, dy, s, need_x, need_w)
            return dx, dw, (dy.sum((0, 2)) if need_b else None), None
        # Wstack[(j', o), (c, r)] = w[o, c, (m-1-j')*s + r]
        wstack = w.reshape(o, c, m, s).flip(2).permute(2, 0, 1, 3).reshape(m * o, c * s)
        dw_acc = torch.zeros(c * s, m * o, dtype=dy.dtype, device=dy.device) if need_w else None
        dx = None
        if need_x:
            dx = torch.empty_like(x)
            dx[:, :, n * s:].zero_()                    # samples no output looked at
        step = _chunk(n * (m * o + 2 * c * s) * dy.element_size())
        for lo in range(0, b, step):
            hi = min(b, lo + step)
            win = windows(dy[lo:hi], m)                 # (cb, n, m*o)
            if need_w:
                ft = frames(x[lo:hi], s, n)             # (cb, n, c*s)
                dw_acc.addmm_(ft.reshape(-1, c * s).t(), win.reshape(-1, m * o))
            if need_x:
                dft = (win.reshape(-1, m * o) @ wstack).reshape(hi - lo, n, c, s)
                dx[lo:hi, :, : n * s].view(hi - lo, c, n, s).copy_(dft.permute(0, 2, 1, 3))
        dw = None
        if need_w:   # dw_acc[(c, r), (j', o)] -> w[o, c, (m-1-j')*s + r]
            dw = dw_acc.reshape(c, s, m, o).flip(2).permute(3, 0, 2, 1).reshape(o, c, k)
        db = dy.sum((0, 2)) if need_b else None
        return dx, dw, db, None


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

    With one input channel the im2col matrix is as small as the output, so
    ``dW = sum_b dY[b] @ X[b]`` is one batched product, and the input
    gradient is ``W^T @ dY`` followed by ``m`` shifted adds (overlap-add).
    """
    o, _, k = w.shape
    b, _, length = x.shape
    t = dy.shape[2]
    m = k // s
    dw = dx = None
    if need_w:
        cols = x[:, 0].unfold(1, k, s)[:, :t].contiguous()           # (B, T, k)
        dw = torch.bmm(dy, cols).sum(0).unsqueeze(1)                  # (O, 1, k)
    if need_x:
        g = torch.bmm(w[:, 0].t().expand(b, k, o), dy).view(b, m, s, t)   # (B, k, T) as (B, m, s, T)
        dx = torch.zeros_like(x)
        frames_ = dx[:, 0, : (t + m - 1) * s].view(b, t + m - 1, s)  # (B, N, s)
        for j in range(m):
            frames_[:, j: j + t].add_(g[:, j].transpose(1, 2))
    return dx, dw


def conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(x)`` through :class:`StridedConv1d` where its shapes allow, else the plain module."""
    s, k = conv.stride[0], conv.kernel_size[0]
    if (k % s or conv.padding[0] or conv.dilation[0] != 1 or conv.groups != 1 or x.device.type != "cpu"):
        return conv(x)
    return StridedConv1d.apply(x, conv.weight, conv.bias, s)


def fast_forward(model, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` computed with the fast convolutions; same parameters, same result."""
    if x.dim() == 2:
        x = x.unsqueeze(1)
    h = x
    for name, module in model.body.named_children():
        if isinstance(module, nn.Sequential) and isinstance(module[0], nn.Conv1d):
            h = conv1d(h, module[0])
            for rest in list(module)[1:]:
                h = rest(h)
        else:
            h = module(h)
    return model.out(model.fc(h.flatten(1)))


class FastStyleNet(nn.Module):
    """Wraps a :class:`StyleNet` so that calling it runs :func:`fast_forward`.

    Holds the very same parameters (no copies): optimising the wrapper trains
    the wrapped model, whose ``state_dict`` is what gets saved.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_forward(self.net, x)


IMPLS = ("auto", "fast", "reference")


def resolve_impl(impl: str, device: torch.device) -> str:
    """``auto`` -> ``fast`` on CPUs (measured faster there), ``reference`` elsewhere."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
    if impl == "auto":
        return "fast" if torch.device(device).type == "cpu" else "reference"
    return impl


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


def training_module(model: nn.Module, impl: str, device: torch.device) -> nn.Module:
    """The module a training step calls: the fast wrapper or the model itself.

    Choosing the fast path on a CPU also applies :func:`tune_allocator`.
    """
    if resolve_impl(impl, device) != "fast":
        return model
    if torch.device(device).type == "cpu":
        tune_allocator()
    return FastStyleNet(model)
