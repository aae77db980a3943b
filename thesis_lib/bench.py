"""``python -m thesis_lib bench``: how fast training, inference and preparation run here.

Everything is measured in the same run on the same machine, so the figures
can be compared with each other and with the thesis's TITAN X (11.39 s per
epoch of 4,800 clips at batch 480):

* seconds per training epoch at the thesis's sizes, for the ``reference``
  implementation (the plain modules) and the ``fast`` one
  (:mod:`thesis_lib.fast`), each the median of several timed epochs after
  warm-up steps, each in its own fresh process so that its peak resident
  memory is its own; on a CUDA GPU also the fast path in TF32 and bf16,
  bf16 with its step uncompiled (``fast-bf16-eager``: what ``train`` runs
  when compiling would not pay, :func:`~thesis_lib.fast.compile_pays`), and
  with the older phase convolutions (``fast+phase``), so that the choice
  :func:`~thesis_lib.fast.default_convs` makes stays measured; on a CPU the
  fast path in float32 and bf16, each also with its batch norms uncompiled
  (``fast-fp32-eager``, ``fast-bf16-eager``: what ``train`` runs for short runs);
* the FLOPs of one training step, counted from the layer shapes
  (:func:`training_flops`), the GFLOP/s each implementation achieves and
  the fraction of the fp32 matrix-multiply peak measured in this run;
* inference clips per second at batch 48 and 480 (batch norms folded, as
  ``predict`` runs, and the plain model), and seconds of decoded music
  classified per second;
* preparation throughput (seconds of music per second of wall time) on
  generated tracks of several minutes, with its peak memory;
* peak memory against track length: one stereo 44.1 kHz track of 5, 40 and
  120 minutes through the streamed file -> clips path, each in a fresh
  process (flat: the decode holds a window, not the track);
* the device, threads, torch version and the machine's load, because on a
  shared machine the figures are only as good as the quiet they were taken in.

``--quick`` shrinks every size so the whole run takes seconds; its numbers
prove that the benchmark runs, nothing more. ``--parts`` measures only some of
them (on a lent GPU, say, where the memory-against-length part only times the CPU).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from .config import BENCH_PARTS as PARTS, THESIS, THESIS_SECONDS_PER_EPOCH, ThesisConfig
from .fast import compile_pays, resolve_impl, resolve_precision
from .runtime import proc_memory, synchronize


@dataclass(frozen=True)
class BenchSizes:
    clips: int = 2 * THESIS.train_per_style         #: training clips per epoch (4,800)
    batch: int = THESIS.batch_size                  #: 480
    epochs: int = 3                                 #: timed epochs per implementation
    warmup_steps: int = 2
    infer_batches: tuple[int, ...] = (THESIS.test_batch_size, THESIS.batch_size)
    infer_clips: int = 960
    matmul_n: int = 2048
    #: generated tracks to prepare; ``None``: two per core, at least 4, so that every worker of the
    #: pool has work and its start-up is shared by several tracks (4 tracks on 16 cores measured the
    #: pool's start-up: 40 s of music per second, issue 12)
    prep_tracks: int | None = None
    prep_seconds: float = 240.0                     #: length of each generated track
    music_seconds: float = 1200.0                   #: decoded music classified for the throughput
    memory_minutes: tuple[float, ...] = (5.0, 40.0, 120.0)   #: stereo 44.1 kHz tracks for peak memory vs length


QUICK = BenchSizes(clips=16, batch=8, epochs=2, warmup_steps=1, infer_batches=(4, 8), infer_clips=8,
                   matmul_n=256, prep_tracks=2, prep_seconds=70.0, music_seconds=20.0,
                   memory_minutes=(1.2, 2.4))


# ----------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------

def forward_flops(cfg: ThesisConfig = THESIS, n_styles: int = 2) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one clip's forward pass, per layer with weights."""
    out, channels, n = {}, 1, cfg.clip_samples
    for i, spec in enumerate(cfg.convs, start=1):
        n = (n - spec.length) // spec.stride + 1
        out[f"conv{i}"] = 2 * spec.filters * n * channels * spec.length
        channels = spec.filters
    flat = channels * n
    out["fc"] = 2 * flat * cfg.fc_units
    out["out"] = 2 * cfg.fc_units * n_styles
    return out


def training_flops(cfg: ThesisConfig = THESIS, batch: int = THESIS.batch_size, n_styles: int = 2) -> int:
    """FLOPs of one training step: forward, input gradient and weight gradient of every layer.

    Each of the three products costs as much as the forward product; conv1's
    input gradient is counted because the input normalisation's scale and
    shift need it. Batch norm, ReLU, the loss and the optimiser (a few
    operations per element or parameter, under 1 %) are left out.
    """
    return 3 * batch * sum(forward_flops(cfg, n_styles).values())


# ----------------------------------------------------------------------------
# Measurements (each heavy one runs in a fresh process: its own peak memory)
# ----------------------------------------------------------------------------

def _peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    """Peak resident memory of this process (or of its waited-for children) in MB.

    For this process, Linux's ``VmHWM`` is read where it exists: ``getrusage``'s
    ``ru_maxrss`` survives ``execve``, so a spawned child would report its
    parent's peak at the moment it was forked (seen here: every memory-against-
    length row read the 1 GB of the training runs before it).
    """
    if who == resource.RUSAGE_SELF and (peak := proc_memory("VmHWM")) is not None:
        return peak / 2 ** 20
    kb = resource.getrusage(who).ru_maxrss        # kilobytes on Linux, bytes on macOS
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def _in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh spawned process and return its result."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def matmul_peak(n: int, device: torch.device, repeats: int = 7) -> dict:
    """fp32 GFLOP/s of an ``n x n`` matrix product, best and median of ``repeats``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = []
    for i in range(repeats + 2):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    return {"n": n, "gflops_best": flops / min(times) / 1e9, "gflops_median": flops / float(np.median(times)) / 1e9}


def _training_path(label: str) -> tuple[str, str, str, str]:
    """A training row's label as ``(impl, convs, precision, mode)``: "fast-bf16" is the fast path in
    bfloat16, "fast-bf16-eager" uncompiled (CUDA step, CPU batch norms), "fast+phase" the older CUDA
    convolutions; the parts not named are empty strings."""
    impl, _, precision = label.partition("-")
    precision, _, mode = precision.partition("-")
    impl, _, convs = impl.partition("+")
    return impl, convs, precision, mode


def _train_child(clips_file: str, n_clips: int, batch: int, epochs: int, warmup: int, impl: str,
                 device: str, threads: int) -> dict:
    """Time ``epochs`` training epochs of ``impl`` on the memory-mapped clips; report peak memory."""
    import torch.nn.functional as F

    from .data import PreparedDataset
    from .fast import ResidentTrainer, training_module
    from .runtime import select_device
    from .config import TrainSettings
    from .train import new_model, train_epoch

    torch.set_num_threads(threads)
    dev = select_device(device)
    clips = np.memmap(clips_file, dtype=np.float32, mode="r", shape=(n_clips, THESIS.clip_samples))
    labels = (np.arange(n_clips) % 2).astype(np.int64)
    ds = PreparedDataset(Path(clips_file).parent, clips, labels, np.arange(n_clips), ["a", "b"],
                         [str(i) for i in range(n_clips)], labels, {})
    idx = np.arange(n_clips)
    torch.manual_seed(0)
    model, opt = new_model(2, TrainSettings.thesis(), THESIS, dev)
    label = impl
    impl, convs, precision, mode = _training_path(label)
    net = training_module(model, impl, dev, precision or "fp32", compiled=mode != "eager")
    x0 = torch.from_numpy(np.array(clips[:batch])).unsqueeze(1).to(dev)
    y0 = torch.from_numpy(labels[:batch]).to(dev)
    step_times, loss = [], None
    for _ in range(warmup):                         # warm-up: allocator, kernels, caches
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x0), y0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        synchronize(dev)
        step_times.append(time.perf_counter() - t0)
    # A live loss keeps its autograd graph, whose gradient accumulators belong to the default
    # stream; a CUDA graph captured while they live fails (seen on an H100). Drop it first.
    del loss
    resident = None
    if dev.type == "cuda" and resolve_impl(impl, dev) == "fast":   # what train runs on one GPU
        resident = ResidentTrainer(model, opt, clips, labels, batch, dev, precision=precision or "fp32",
                                   convs=convs or "auto", compile=mode != "eager")
        resident.epoch(np.random.default_rng(1))    # compile and capture outside the timing
    epoch_times, losses = [], []
    for e in range(epochs):
        rng = np.random.default_rng([0, e])
        t0 = time.perf_counter()
        losses.append(resident.epoch(rng) if resident is not None
                      else train_epoch(model, opt, ds, idx, labels, batch, rng, dev, net=net))
        synchronize(dev)
        epoch_times.append(time.perf_counter() - t0)
    return {"impl": label, "convs": resident.convs if resident is not None else None, "epoch_seconds": epoch_times,
            "seconds_per_epoch": float(np.median(epoch_times)),
            "warmup_step_seconds": step_times, "losses": losses, "peak_rss_mb": _peak_rss_mb()}


def _inference_child(batches: tuple[int, ...], n_clips: int, music_seconds: float, device: str,
                     threads: int) -> dict:
    from .model import StyleNet
    from .predict import inference_module, music_throughput
    from .runtime import select_device

    torch.set_num_threads(threads)
    dev = select_device(device)
    torch.manual_seed(0)
    model = StyleNet(2).to(dev).eval()
    nets = {"clips_per_second": inference_module(model), "clips_per_second_plain": model}
    out: dict = {k: {} for k in nets}
    for b in batches:
        x = torch.randn(b, 1, THESIS.clip_samples, device=dev)
        n_steps = max(2, math.ceil(n_clips / b))
        for key, net in nets.items():
            with torch.inference_mode():
                net(x)
                times = []
                for _ in range(n_steps):
                    synchronize(dev)
                    t0 = time.perf_counter()
                    net(x)
                    synchronize(dev)
                    times.append(time.perf_counter() - t0)
            out[key][str(b)] = b / float(np.median(times))
    rate = music_throughput(model, music_seconds, batch_size=THESIS.test_batch_size, device=dev)
    return {**out, "music_seconds_per_second": rate, "peak_rss_mb": _peak_rss_mb()}


def _prepare_child(data: str, out: str, jobs: int) -> dict:
    from .data import prepare_dataset

    t0 = time.perf_counter()
    ds = prepare_dataset(data, out, jobs=jobs, progress=False, force=True)
    wall = time.perf_counter() - t0
    return {"wall_seconds": wall, "clips": len(ds), "peak_rss_mb": _peak_rss_mb(),
            "workers_peak_rss_mb": _peak_rss_mb(resource.RUSAGE_CHILDREN)}


def _write_long_track(path: Path, minutes: float, sr: int = 44_100) -> None:
    """A stereo 16-bit FLAC of ``minutes`` (tones and a little noise), written 10 s at a time."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    n = int(minutes * 60 * sr)
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16", format="FLAC") as f:
        for lo in range(0, n, 10 * sr):
            t = np.arange(lo, min(n, lo + 10 * sr)) / sr
            f0 = 220 * 2 ** ((lo // (10 * sr)) % 12 / 12)
            y = np.stack([0.3 * np.sin(2 * np.pi * f0 * t), 0.25 * np.sin(2 * np.pi * 1.5 * f0 * t)], 1)
            f.write((y + 0.01 * rng.standard_normal(y.shape)).astype(np.float32))


def _track_memory_child(path: str) -> dict:
    """Peak resident memory of the one file -> clips path on one long track (streamed, clips discarded)."""
    from .audio import decode_track, thesis_clips

    before = _peak_rss_mb()
    t0 = time.perf_counter()
    n = 0
    with decode_track(path) as track:
        for batch in thesis_clips(track):
            n += len(batch)
    return {"clips": n, "wall_seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
            "rss_before_mb": before}


def preparation_tracks(sizes: BenchSizes, cores: int | None = None) -> int:
    """How many tracks the preparation benchmark prepares: ``sizes.prep_tracks``, or two per core (at least 4)."""
    if sizes.prep_tracks is not None:
        return sizes.prep_tracks
    return max(4, 2 * (cores or os.cpu_count() or 1))


def _compose_one(args: tuple[Path, int, float, int]) -> float:
    import soundfile as sf

    from .synth import STYLES, compose_track

    root, i, seconds, sr = args
    style = STYLES[i % len(STYLES)]
    y = compose_track(style, np.random.default_rng([7, i]), seconds, sr)
    path = root / style / f"{style}_{i:03d}.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, sr, subtype="PCM_16")
    return len(y) / sr


def _compose_tracks(root: Path, n: int, seconds: float, sr: int = 11_025, jobs: int = 1) -> float:
    """Write ``n`` generated tracks of ``seconds`` (both styles) as FLAC, ``jobs`` at a time (not
    timed); return the total music seconds."""
    work = [(root, i, seconds, sr) for i in range(n)]
    if jobs <= 1 or n <= 1:
        return float(sum(map(_compose_one, work)))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(jobs, n), mp_context=multiprocessing.get_context("spawn")) as pool:
        return float(sum(pool.map(_compose_one, work)))


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------

def _machine(device: torch.device, threads: int) -> dict:
    info = {"device": str(device), "threads": threads, "cpu_count": os.cpu_count(),
            "torch": str(torch.__version__), "python": platform.python_version(),
            "machine": platform.machine(), "processor": _cpu_name(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_bench(out: str | Path = "bench.json", quick: bool = False, device: str = "auto",
              epochs: int | None = None, sizes: BenchSizes | None = None,
              log=print, isolate: bool = True, parts: tuple[str, ...] = PARTS) -> dict:
    """Measure everything the module doc lists; print a summary and write ``out`` (JSON).

    ``isolate=False`` runs every part in this process (faster to start, for
    tests; peak memory figures are then this process's running maximum).
    ``parts``: which of :data:`PARTS` to measure (the matmul peak and the FLOP count always).
    """
    from .runtime import select_device

    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"bench parts must be some of {', '.join(PARTS)}; got {', '.join(unknown) or 'none'}")

    run = _in_child if isolate else (lambda fn, *args: fn(*args))

    sizes = sizes or (QUICK if quick else BenchSizes())
    if epochs is not None:
        sizes = BenchSizes(**{**sizes.__dict__, "epochs": epochs})
    dev = select_device(device)
    threads = torch.get_num_threads()
    result: dict = {"quick": quick, "isolated": isolate, "parts": [p for p in PARTS if p in parts],
                    "sizes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sizes.__dict__.items()},
                    "machine": _machine(dev, threads)}
    log(f"bench on {dev} ({result['machine']['processor']}), {threads} threads, torch {torch.__version__}, "
        f"load average {result['machine']['load_average']}")

    peak = matmul_peak(sizes.matmul_n, dev)
    result["matmul_fp32"] = peak
    log(f"fp32 matmul peak ({sizes.matmul_n}^3): {peak['gflops_best']:.1f} GFLOP/s best, "
        f"{peak['gflops_median']:.1f} median")

    step_flops = training_flops(THESIS, sizes.batch)
    steps = math.ceil(sizes.clips / sizes.batch)
    result["flops"] = {"forward_per_clip": forward_flops(THESIS), "training_step": step_flops,
                       "steps_per_epoch": steps, "training_epoch": step_flops * steps}
    log(f"training step (batch {sizes.batch}): {step_flops / 1e9:.1f} GFLOP; epoch: "
        f"{step_flops * steps / 1e9:.0f} GFLOP in {steps} steps")

    tmp = Path(tempfile.mkdtemp(prefix="thesis_lib_bench_"))
    try:
        if "training" in parts:
            result["training"] = _bench_training(tmp, sizes, dev, threads, peak["gflops_best"], run, log)
        if "inference" in parts:
            inf = run(_inference_child, sizes.infer_batches, sizes.infer_clips, sizes.music_seconds,
                      str(dev), threads)
            result["inference"] = inf
            log("inference (batch norms folded, as predict runs): "
                + ", ".join(f"batch {b}: {v:.0f} clips/s" for b, v in inf["clips_per_second"].items())
                + " (plain model: " + ", ".join(f"{v:.0f}" for v in inf["clips_per_second_plain"].values())
                + f"); {inf['music_seconds_per_second']:.0f} s of decoded music classified per second")
        if "preparation" in parts:
            result["preparation"] = _bench_preparation(tmp, sizes, run, log)
        if "memory" in parts:
            result["memory_vs_length"] = _bench_memory(tmp, sizes, run, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    training, prep, inf = (result.get(k, {}) for k in ("training", "preparation", "inference"))
    peaks = {"training_reference": training.get("reference", {}).get("peak_rss_mb"),
             "training_fast": training.get("fast", {}).get("peak_rss_mb"),
             "preparation": prep.get("peak_rss_mb"), "preparation_workers": prep.get("workers_peak_rss_mb"),
             "inference": inf.get("peak_rss_mb")}
    result["peak_rss_mb"] = {k: v for k, v in peaks.items() if v is not None}
    result["machine"]["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    log(f"wrote {out}")
    return result


def _memory_check_mb(label: str, batch: int) -> float:
    """:func:`~thesis_lib.train.training_memory` (MB) for a training row's label ("fast-bf16-eager"):
    shown beside the measured peak, so a bench run says when the check's table is out of date."""
    from .train import training_memory

    impl, _, precision, mode = _training_path(label)
    return training_memory(batch, impl, precision or "fp32", compiled=mode != "eager") / 2 ** 20


def _bench_training(tmp: Path, sizes: BenchSizes, dev: torch.device, threads: int, peak_gflops: float,
                    run, log) -> dict:
    """Seconds per epoch of every training path this device has, each in its own process."""
    step_flops = training_flops(THESIS, sizes.batch)
    steps = math.ceil(sizes.clips / sizes.batch)
    clips_file = tmp / "clips.f32"
    rng = np.random.default_rng(0)
    mm = np.memmap(clips_file, dtype=np.float32, mode="w+", shape=(sizes.clips, THESIS.clip_samples))
    for lo in range(0, sizes.clips, 256):
        hi = min(sizes.clips, lo + 256)
        mm[lo:hi] = 0.3 * rng.standard_normal((hi - lo, THESIS.clip_samples), dtype=np.float32)
    mm.flush()
    del mm
    training: dict = {}
    impls = (("reference", "fast", "fast-tf32", "fast-bf16", "fast-bf16-eager", "fast+phase", "fast+phase-bf16")
             if dev.type == "cuda" else ("reference", "fast", "fast-bf16", "fast-fp32-eager", "fast-bf16-eager"))
    for impl in impls:
        r = run(_train_child, str(clips_file), sizes.clips, sizes.batch, sizes.epochs,
                sizes.warmup_steps, impl, str(dev), threads)
        r["gflops"] = step_flops * steps / r["seconds_per_epoch"] / 1e9
        r["fraction_of_peak"] = r["gflops"] / peak_gflops
        r["seconds_for_thesis_run"] = r["seconds_per_epoch"] * THESIS.epochs
        if dev.type == "cpu":     # what train's memory check expects of this path: it must not be below the peak
            r["memory_check_mb"] = _memory_check_mb(impl, sizes.batch)
        training[impl] = r
        label = impl + (f" ({r['convs']})" if r.get("convs") else "")
        log(f"training {label:24s}: {r['seconds_per_epoch']:7.3f} s/epoch (median of "
            f"{sizes.epochs}: {', '.join(f'{t:.3f}' for t in r['epoch_seconds'])}), "
            f"{r['gflops']:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.1f} % of peak, "
            f"20 epochs {r['seconds_for_thesis_run']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
            + (f" (train's memory check expects {r['memory_check_mb']:.0f} MB, plus the "
               f"{sizes.clips * THESIS.clip_samples * 4 / 2 ** 20:.0f} MB of memory-mapped clips)"
               if "memory_check_mb" in r else ""))
    ref, fast = training["reference"], training["fast"]
    training["default"] = resolve_impl("auto", dev)   # what train uses here
    training["default_precision"] = precision = resolve_precision("auto", "auto", dev)
    # compiling pays only for long enough runs (fast.compile_pays): on CUDA not for the thesis's 20
    # epochs, on a CPU from about two epochs of its clips
    thesis_run = THESIS.epochs * 2 * THESIS.train_per_style
    training["default_compiled_for_thesis_run"] = compiled = compile_pays(thesis_run, device=dev)
    precision += ", compiled" if compiled else " uncompiled, for the thesis's 20 epochs"
    log(f"train's default here: {training['default']} in {precision} (--precision auto)")
    training["speedup"] = ref["seconds_per_epoch"] / fast["seconds_per_epoch"]
    training["thesis_titan_x_seconds_per_epoch"] = THESIS_SECONDS_PER_EPOCH
    log(f"fast / reference speed-up {training['speedup']:.2f}x; the thesis's TITAN X: "
        f"{THESIS_SECONDS_PER_EPOCH} s/epoch")
    return training


def _bench_preparation(tmp: Path, sizes: BenchSizes, run, log) -> dict:
    """Seconds of generated music prepared per second of wall time, with a job per core."""
    data = tmp / "tracks"
    jobs = os.cpu_count() or 1
    n_tracks = preparation_tracks(sizes, jobs)
    music = _compose_tracks(data, n_tracks, sizes.prep_seconds, jobs=jobs)
    prep = run(_prepare_child, str(data), str(tmp / "prepared"), jobs)
    prep.update(tracks=n_tracks, music_seconds=music, jobs=jobs,
                music_seconds_per_second=music / prep["wall_seconds"])
    log(f"preparation: {n_tracks} tracks of {sizes.prep_seconds:.0f} s with {jobs} jobs in "
        f"{prep['wall_seconds']:.1f} s = {prep['music_seconds_per_second']:.0f} s of music per second; "
        f"peak RSS {prep['peak_rss_mb']:.0f} MB (main), {prep['workers_peak_rss_mb']:.0f} MB (largest worker)")
    return prep


def _bench_memory(tmp: Path, sizes: BenchSizes, run, log) -> list[dict]:
    """Peak memory of one long track's decode, for each length: flat if the decode streams."""
    rows = []
    for minutes in sizes.memory_minutes:
        long_track = tmp / f"mix_{minutes:g}min.flac"
        _write_long_track(long_track, minutes)
        r = run(_track_memory_child, str(long_track))
        long_track.unlink()
        r.update(minutes=minutes, music_seconds_per_second=minutes * 60 / r["wall_seconds"])
        rows.append(r)
        log(f"one {minutes:g}-minute stereo 44.1 kHz track -> {r['clips']} clips: peak RSS "
            f"{r['peak_rss_mb']:.0f} MB ({r['rss_before_mb']:.0f} MB before decoding), "
            f"{r['music_seconds_per_second']:.0f} s of music per second")
    return rows
