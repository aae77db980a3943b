"""Chapter 8's micro-benchmarks: the thesis's ``exp()`` side test and seconds per training batch."""

from __future__ import annotations

import numpy as np

from ..config import THESIS
from ..runtime import synchronize

H100_SECONDS_PER_EPOCH = {
    "plain module, cuDNN batch norm (eager)": 0.710,
    "batch norm by plain reductions (eager)": 0.179,
    "+ phase convolutions (eager)": 0.142,
    "+ torch.compile": 0.105,
    "+ channels-last, CUDA graph: the previous fast path (fp32)": 0.084,
    "the previous fast path in bf16": 0.060,
    "block matrix products instead of phase convolutions (fp32): the fast path": 0.080,
    "the fast path, TF32 matrix products": 0.062,
    "the fast path in bf16": 0.046,
    "the fast path in bf16, uncompiled: what a 20-epoch run uses (compiling costs 7-30 s)": 0.120,
}
"""Seconds per thesis epoch (4,800 clips, batch 480) measured on one NVIDIA H100 80 GB, torch 2.11, CUDA 13.

Not measured by the book: copied from the README's "GPU" section (medians of 5 or 6 epochs after
warm-up, clips resident on the GPU, three sessions' lab scripts and ``bench``), so chapter 8 can show them,
labelled as measured elsewhere, beside what its own machine measures.
"""

def exp_timing(device: str = "cpu", values: int = 230_400, repeats: int = 1000) -> float:
    """Seconds for ``repeats`` element-wise ``exp()`` of ``values`` float32 numbers (thesis 5.1)."""
    import time

    import torch

    x = torch.rand(values, device=device)
    torch.exp(x)  # warm-up (CUDA context, kernels)
    synchronize(x.device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        y = torch.exp(x)
    synchronize(x.device)
    del y
    return time.perf_counter() - t0


def epoch_timing(batches: int, batch_size: int = THESIS.batch_size, device: str = "cpu", seed: int = 0,
                 impl: str = "auto", precision: str = "fp32") -> float:
    """Seconds per training batch of the thesis net (random clips, Nesterov SGD): :func:`epoch_timings`
    of one path."""
    return epoch_timings(batches, [(impl, precision)], batch_size, device, seed)[impl, precision]


def epoch_timings(batches: int, paths: list[tuple[str, str]], batch_size: int = THESIS.batch_size,
                  device: str = "cpu", seed: int = 0) -> dict[tuple[str, str], float]:
    """Seconds per training batch of each ``(impl, precision)`` path, their batches alternating.

    Each path gets two warm-up batches (the first steps of a path map its buffers and pick its
    kernels), then the paths take turns, batch by batch, so that a shared machine whose speed
    drifts by tens of per cent from one minute to the next slows them alike; each value is the
    median over ``batches``. ``impl`` picks the module a step calls, as ``train`` does
    (:func:`thesis_lib.fast.training_module`): ``"reference"`` the plain
    :class:`~thesis_lib.model.StyleNet`, ``"fast"`` :mod:`thesis_lib.fast`'s wrapper, ``"auto"``
    what training uses on ``device``; ``precision`` as ``train --precision`` (on a CPU ``"bf16"``
    is the fast path's bfloat16 products). All paths train the same weights in one process, so the
    CPU fast path's :func:`~thesis_lib.fast.tune_allocator` (which ``train --impl reference`` does not
    call) serves every path timed with or after it: time the plain module first and alone to see what
    ``--impl reference`` costs. On a GPU this times the eager module, not the CUDA-graph
    :class:`~thesis_lib.fast.ResidentTrainer` of ``train``.
    """
    import time

    import torch
    import torch.nn.functional as F

    from ..config import TrainSettings
    from ..fast import training_module
    from ..train import new_model

    torch.manual_seed(seed)
    dev = torch.device(device)
    model, opt = new_model(2, TrainSettings.thesis(), THESIS, dev)
    model.train()
    nets = {(impl, prec): training_module(model, impl, dev, prec) for impl, prec in paths}
    x = 0.3 * torch.randn(batch_size, 1, THESIS.clip_samples, device=dev)
    y = torch.randint(0, 2, (batch_size,), device=dev)

    def step(net) -> float:
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        synchronize(dev)
        return time.perf_counter() - t0

    for net in nets.values():
        step(net)
        step(net)
    times: dict = {path: [] for path in nets}
    for _ in range(batches):
        for path, net in nets.items():
            times[path].append(step(net))
    return {path: float(np.median(t)) for path, t in times.items()}
