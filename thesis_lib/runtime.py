"""Where the work runs: device selection and synchronisation.

Training, inference, dreaming and the benchmarks all ask this module which
device to use (:func:`select_device`), which device a model lives on
(:func:`device_of`) and, before reading a clock, to wait for queued GPU work
(:func:`synchronize`), and how much memory the process may still take
(:func:`available_memory`). It imports nothing of the library, so inference
and dreaming do not depend on the training module.
"""

from __future__ import annotations

from pathlib import Path

import torch


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; anything else is taken as given."""
    if name != "auto":
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of a model's (first) parameter."""
    return next(model.parameters()).device


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (CUDA kernels run asynchronously); a no-op on the CPU.

    Call it before reading a clock, so that a timing covers the work and not only its launch.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (Linux ``/proc/cpuinfo``) of bfloat16 dot-product units: with them, ``--precision bf16``
runs the CPU fast path's products faster than float32; without them bf16 is emulated, and slower."""


def cpu_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """Which of :data:`BF16_FLAGS` this CPU reports (empty where there are none or no ``cpuinfo``: macOS, Windows)."""
    try:
        with open(cpuinfo) as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in BF16_FLAGS if f in flags]


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None         # "max": no limit


def proc_memory(key: str, path: Path = Path("/proc/self/status")) -> int | None:
    """Bytes in the ``key`` line of a Linux ``/proc`` or cgroup file: ``Key:  value kB`` lines
    (``VmRSS``, ``VmHWM`` of this process's ``status``; ``MemAvailable`` of ``/proc/meminfo``; kB
    made bytes) or ``key value`` lines in bytes (a cgroup's ``memory.stat``); ``None`` where there
    is none."""
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].rstrip(":") == key and parts[1].isdigit():
                return int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    except OSError:
        pass
    return None


def resident_memory(proc: Path = Path("/proc")) -> int:
    """Bytes this process holds in memory now (``VmRSS``; 0 where unknown)."""
    return proc_memory("VmRSS", proc / "self" / "status") or 0


def available_memory(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process can still allocate before the kernel kills it: the smaller of the
    machine's available memory (``MemAvailable``) and what the container's memory limit leaves
    (cgroup v2 ``memory.max - memory.current``, or v1's ``limit_in_bytes - usage_in_bytes``),
    where the container's inactive file cache counts as free, as the kernel reclaims it first
    (the "working set" that Kubernetes, and so Binder, limits). Binder's containers have about
    2 GB whatever the host has. ``None`` where neither is known (not Linux)."""
    machine = proc_memory("MemAvailable", proc / "meminfo")
    found = [] if machine is None else [machine]
    for limit, usage, stat, cache in (("memory.max", "memory.current", "memory.stat", "inactive_file"),
                                      ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                       "memory/memory.stat", "total_inactive_file")):
        lim, used = _read_int(cgroup / limit), _read_int(cgroup / usage)
        if lim is not None and used is not None and lim < 1 << 60:   # v1 writes a huge number for "none"
            working_set = max(0, used - (proc_memory(cache, cgroup / stat) or 0))
            found.append(max(0, lim - working_set))
            break
    return min(found) if found else None


__all__ = ["select_device", "device_of", "synchronize", "cpu_bf16_units", "proc_memory", "resident_memory",
           "available_memory"]
