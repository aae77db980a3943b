"""Chapter 8's micro-benchmarks: the thesis's ``exp()`` side test and seconds per training batch."""

from __future__ import annotations

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
}
"""Seconds per thesis epoch (4,800 clips, batch 480) measured on one NVIDIA H100 80 GB, torch 2.11, CUDA 13.

Not measured by the book: copied from the README's "GPU" section (medians of 5 or 6 epochs after
warm-up, clips resident on the GPU, two sessions' lab scripts), so chapter 8 can show them,
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
                 impl: str = "auto") -> float:
    """Seconds per training batch of the thesis net (random clips, Nesterov SGD), after one warm-up batch.

    ``impl`` picks the module a step calls, as ``train`` does
    (:func:`thesis_lib.fast.training_module`): ``"reference"`` the plain
    :class:`~thesis_lib.model.StyleNet`, ``"fast"`` :mod:`thesis_lib.fast`'s
    wrapper, ``"auto"`` what training uses on ``device`` (fast on CPUs and
    CUDA). On a GPU this times the eager module, not the CUDA-graph
    :class:`~thesis_lib.fast.ResidentTrainer` that ``train`` runs there.
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
    net = training_module(model, impl, dev)
    x = 0.3 * torch.randn(batch_size, 1, THESIS.clip_samples, device=dev)
    y = torch.randint(0, 2, (batch_size,), device=dev)

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    synchronize(dev)
    return (time.perf_counter() - t0) / batches
