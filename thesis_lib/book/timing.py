"""Chapter 8's micro-benchmarks: the thesis's ``exp()`` side test and seconds per training batch."""

from __future__ import annotations

from ..config import THESIS
from ..runtime import synchronize

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


def epoch_timing(batches: int, batch_size: int = THESIS.batch_size, device: str = "cpu", seed: int = 0) -> float:
    """Seconds per training batch of the thesis net (random clips, Nesterov SGD), after one warm-up batch."""
    import time

    import torch
    import torch.nn.functional as F

    from ..config import TrainSettings
    from ..train import new_model

    torch.manual_seed(seed)
    dev = torch.device(device)
    model, opt = new_model(2, TrainSettings.thesis(), THESIS, dev)
    model.train()
    x = 0.3 * torch.randn(batch_size, 1, THESIS.clip_samples, device=dev)
    y = torch.randint(0, 2, (batch_size,), device=dev)

    def step():
        loss = F.cross_entropy(model(x), y)
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
