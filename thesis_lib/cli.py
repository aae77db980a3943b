"""``python -m thesis_lib``: the one command line of the library.

The core's subcommands (``prepare``, ``train``, ``reproduce``, ``generate``,
``predict``, ``bench``) are defined here; the wings register theirs
(:func:`thesis_lib.dream.cli.add_parsers`: ``dream``, ``transform``,
``style-transfer``, ``dream-report``; :func:`thesis_lib.book.build.add_parser`:
``book``). Every parser names its handler with ``set_defaults(handler=...)``,
and handlers import what they need when they run, so ``--help`` imports
neither torch nor scipy. Every default comes from :mod:`thesis_lib.config`;
``--help`` on each subcommand lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

from .config import BENCH_PARTS, MODELS, THESIS, TRAIN_DEFAULTS


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=list(MODELS), default=TRAIN_DEFAULTS.model,
                   help=f"which classifier (default {TRAIN_DEFAULTS.model}): fusion (musicnn, musicnn-vgg and baseline, "
                        "their probabilities multiplied), musicnn (a tagger pretrained on a million songs, frozen, "
                        "+ logistic regression), musicnn-vgg (the same with the authors' VGG-like tagger), fusion-mel (mel and baseline multiplied), mel (log-mel front "
                        "end, small CNN, global pooling), thesis (the thesis's raw-waveform net; the one dreaming "
                        "needs) or baseline (log-mel mean/std per band + logistic regression)")
    p.add_argument("--recipe", choices=["robust", "thesis"], default=TRAIN_DEFAULTS.recipe,
                   help="robust (default): fresh random windows, augmentation, dropout, weight decay, epoch "
                        "chosen on a validation split by track; thesis: the thesis's loop (same clips every "
                        "epoch, fixed epochs; thesis net only)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="rate the clips are prepared at (default: 16000 for every model but the thesis net, "
                        "which reads the thesis's 8000; musicnn hears 16000 only)")


def _add_train_options(p: argparse.ArgumentParser, thesis: bool) -> None:
    if thesis:
        lr, bs, ep = THESIS.learning_rate, THESIS.batch_size, THESIS.epochs
        p.add_argument("--epochs", type=int, default=ep, help=f"training epochs (default {ep})")
        p.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
        p.add_argument("--batch-size", type=int, default=bs, help=f"training batch size (default {bs})")
    else:   # defaults depend on --model and --recipe: TrainSettings.recommended / TrainSettings()
        p.add_argument("--epochs", type=int, default=None,
                       help=f"training epochs (default {TRAIN_DEFAULTS.epochs})")
        p.add_argument("--lr", type=float, default=None,
                       help=f"learning rate (default {TRAIN_DEFAULTS.learning_rate}; see TrainSettings.recommended)")
        p.add_argument("--batch-size", type=int, default=None,
                       help=f"training batch size (default {TRAIN_DEFAULTS.batch_size})")
    p.add_argument("--train-per-style", type=int, default=THESIS.train_per_style,
                   help=f"training clips per style (default {THESIS.train_per_style})")
    p.add_argument("--test-per-style", type=int, default=THESIS.test_per_style,
                   help=f"test clips per style (default {THESIS.test_per_style})")
    p.add_argument("--split", choices=["track", "clip"], default="track",
                   help="'track' keeps every song on one side (default); 'clip' is the thesis's "
                        "clip-level split, which lets clips of one song leak into the test set")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the shuffles")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--impl", choices=["auto", "fast", "reference"], default="auto",
                   help="training implementation of the thesis net: auto (default; the fast paths on "
                        "CPUs and CUDA GPUs, the plain modules elsewhere), fast or reference. Both "
                        "compute the same function")
    p.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16"], default="auto",
                   help="arithmetic of the thesis net's fast path: auto (default: bf16 where the CPU or "
                        "GPU has bfloat16 units, else fp32; the run records which), fp32, tf32 (TF32 "
                        "matrix products on CUDA GPUs; float32 elsewhere) or bf16 (CUDA: bfloat16 "
                        "autocast; CPU: bfloat16 activations and products from conv2 to the fc layer, "
                        "float32 weights and statistics)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m thesis_lib",
        description="Music style classification and transformation with a raw-waveform CNN "
                    "(after Geng, 2016).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="cut a folder of music into prepared clips",
                       description="Load every track of DATA/<style>/ as mono 8 kHz, normalise its peak to "
                                   "0.9, drop 30 s at each end and cut 5-second clips into OUT, with "
                                   "report.json listing every skipped file and why.")
    p.set_defaults(handler=_cmd_prepare)
    p.add_argument("--data", required=True, type=Path, help="folder with one sub-folder per style")
    p.add_argument("--out", required=True, type=Path, help="folder for the prepared clips")
    p.add_argument("--jobs", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="prepare again even if OUT is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="train a style classifier on your own music",
                       description="Train and evaluate the style classifier on DATA (a folder "
                                   "DATA/<style>/<tracks>, or a folder written by `prepare`). Writes "
                                   "OUT/model.pt, OUT/metrics.json and OUT/checkpoint.pt (after every "
                                   "epoch). Defaults suit small collections; `reproduce` uses the "
                                   "thesis's learning rate 0.01 and batch 480.")
    p.set_defaults(handler=_cmd_train)
    p.add_argument("--data", type=Path, help="audio folder (DATA/<style>/...) or prepared folder")
    p.add_argument("--out", type=Path, help="run folder for model.pt and metrics.json")
    p.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the interrupted run in DIR from its last complete epoch")
    p.add_argument("--cache", type=Path, default=None,
                   help="where prepared clips are cached (default $THESIS_LIB_CACHE or ~/.cache/thesis_lib)")
    _add_model_options(p)
    _add_train_options(p, thesis=False)

    p = sub.add_parser("crossval", help="K-fold cross-validation by track: mean and spread of the accuracy",
                       description="Split DATA's tracks into K folds (grouped by track, stratified by style), "
                                   "train on K-1 folds and test on the held-out one, K times. Writes "
                                   "OUT/crossval.json: each fold's clip and track accuracy and test tracks, the "
                                   "means and standard deviations, the confusion matrix summed over folds.")
    p.set_defaults(handler=_cmd_crossval)
    p.add_argument("--data", required=True, type=Path, help="audio folder (DATA/<style>/...) or prepared folder")
    p.add_argument("--out", required=True, type=Path, help="folder for crossval.json")
    p.add_argument("--folds", type=int, default=4, help="number of folds K (default 4)")
    p.add_argument("--cache", type=Path, default=None, help="where prepared clips are cached")
    _add_model_options(p)
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {TRAIN_DEFAULTS.epochs})")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: as train)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size (default: as train)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds, the weights and the shuffles")
    p.add_argument("--repeats", type=int, default=1,
                   help="deal the folds this many times (seeds SEED, SEED+1, ...) and report over all of them "
                        "(default 1); on a small collection which tracks share a fold moves the mean")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--impl", choices=["auto", "fast", "reference"], default="auto",
                   help="thesis-net convolution implementation (as train)")
    p.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16"], default="auto", help="as train")
    p.add_argument("--quiet", action="store_true", help="only one line per fold")

    p = sub.add_parser("reproduce", help="the thesis's first experiment on the built-in data",
                       description="Compose the built-in synthetic c-pop and metal tracks, prepare them as "
                                   "the thesis did, train the thesis net with the thesis's settings, "
                                   "evaluate, and write metrics.json, model.pt, figure21.png and table1.md.")
    p.set_defaults(handler=_cmd_reproduce)
    p.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="output folder (default runs/reproduce)")
    p.add_argument("--tracks-per-style", type=int, default=None,
                   help="synthetic tracks per style (default 110, about 2,900 clips per style)")
    p.add_argument("--data-dir", type=Path, default=None, help="where to compose the tracks (default: the cache)")
    _add_train_options(p, thesis=True)

    p = sub.add_parser("generate", help="compose the built-in synthetic dataset",
                       description="Write the deterministic synthetic c-pop and metal tracks as "
                                   "OUT/<style>/<track>.flac.")
    p.set_defaults(handler=_cmd_generate)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tracks-per-style", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("predict", help="classify whole songs with a trained model",
                       description="Load each FILE (or every audio file below each DIR) as preparation "
                                   "does, cut the whole track into 5-second clips (dropping 30 s at each "
                                   "end when the track is long enough to keep a clip), and print the "
                                   "style probabilities averaged over the clips and the winning style. "
                                   "Unreadable files are reported and skipped.")
    p.set_defaults(handler=_cmd_predict)
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--model", required=True, type=Path, help="model.pt written by train or reproduce, or pretrained:NAME for a net shipped with the package (python -m thesis_lib pretrained)")
    p.add_argument("--json", action="store_true", help="one JSON document with every track on stdout")
    p.add_argument("--trim", choices=["auto", "thesis", "none"], default="auto",
                   help="auto: drop 30 s at each end when the track is long enough (default); thesis: "
                        "always (shorter tracks are errors); none: use the whole track")
    p.add_argument("--batch-size", type=int, default=THESIS.test_batch_size,
                   help=f"clips per forward pass (default {THESIS.test_batch_size})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")

    p = sub.add_parser("bench", help="measure training, inference and preparation speed",
                       description="Time the reference and the fast training path at the thesis's sizes "
                                   "(4,800 clips, batch 480), FLOPs and the fraction of this machine's "
                                   "measured fp32 matmul peak, inference and preparation throughput and "
                                   "peak memory; print them and write them to --out as JSON.")
    p.set_defaults(handler=_cmd_bench)
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON file (default bench.json)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test in seconds, not a measurement")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per implementation (default 3)")
    p.add_argument("--parts", default=",".join(BENCH_PARTS),
                   help=f"comma-separated parts to measure, some of {','.join(BENCH_PARTS)} (default: all)")

    p = sub.add_parser("pretrained", help="the trained nets shipped with the package (--model pretrained:NAME)",
                       description="List the nets shipped with the package, with what they were trained on and "
                                   "how well they score; maintainers refresh the book's thesis net from the "
                                   "cached run of `make book` with --ship-book-run.")
    p.set_defaults(handler=_cmd_pretrained)
    p.add_argument("--ship-book-run", action="store_true",
                   help="store the thesis-sized book run (trained by make book) as the shipped thesis-synth net")
    p.add_argument("--export", type=Path, metavar="RUN", default=None,
                   help="store RUN/model.pt (a train run) as a shipped net named --name, with RUN/metrics.json "
                        "and, with --crossval, the cross-validated accuracy of the same recipe")
    p.add_argument("--name", default=None, help="with --export: the shipped net's name (letters, digits, - and _)")
    p.add_argument("--title", default="", help="with --export: one line saying what the net is")
    p.add_argument("--crossval", type=Path, default=None, help="with --export: crossval.json of the same settings")
    p.add_argument("--references", action="store_true",
                   help="make the reference sounds (dreams, inversion, style transfer, effect steering) anew "
                        "from the shipped thesis-synth net")

    # The wings register their own subcommands; their modules import no torch at this point.
    from .book.build import add_parser as add_book_parser
    from .dream.cli import add_parsers as add_dream_parsers
    from .free_music import add_parser as add_free_music_parser

    add_dream_parsers(sub)          # dream, transform, style-transfer, dream-report
    add_book_parser(sub)            # book
    add_free_music_parser(sub)      # free-music: a free real-music collection from Debian packages
    return parser


def _cmd_prepare(a) -> int:
    from .data import describe_report, prepare_dataset

    ds = prepare_dataset(a.data, a.out, jobs=a.jobs, progress=not a.quiet, force=a.force)
    print(describe_report(ds))
    print(f"{len(ds)} clips in {ds.path}; report: {ds.path / 'report.json'}")
    return 0


def _dataset_for(data: Path, cache: Path | None, progress: bool, settings=None):
    """The clips ``settings`` read (their sample rate), from an audio folder or a prepared one."""
    from .data import PreparedDataset, describe_report, prepare_dataset
    from .robust import prepared_for

    if (data / "index.json").is_file():
        ds = PreparedDataset.load(data)
        return ds if settings is None else prepared_for(ds, settings, progress=progress)
    cfg = settings.applied_to(THESIS) if settings is not None else THESIS
    ds = prepare_dataset(data, progress=progress, cache_dir=cache, cfg=cfg)
    print(describe_report(ds))
    print(f"prepared clips cached in {ds.path}")
    return ds


@contextlib.contextmanager
def _distributed_launch(device: str):
    """Under ``torchrun`` (``WORLD_SIZE`` > 1), join the process group for the whole command."""
    from .distributed import env_info, setup, teardown
    from .runtime import select_device

    info = env_info()
    created = False
    if info.enabled:
        info, _, created = setup(select_device(device))
    try:
        yield info
    except BaseException:
        teardown(created, wait=False)        # no barrier: the other processes may never arrive
        raise
    teardown(created)


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _cmd_train(a) -> int:
    from .data import split_dataset
    from .reproduce import summary
    from .train import resume, train

    if a.resume:
        result = resume(a.resume, progress=not a.quiet)
    else:
        if a.data is None or a.out is None:
            print("train needs --data DIR and --out DIR (or --resume DIR)", file=sys.stderr)
            return 2
        settings = _settings_from_args(a)
        with _distributed_launch(a.device) as info:
            with contextlib.redirect_stdout(sys.stdout if info.is_main else io.StringIO()):
                if info.enabled and not info.is_main:
                    _barrier()                       # rank 0 prepares the clips first...
                ds = _dataset_for(a.data, a.cache, not a.quiet and info.is_main, settings)
                if info.enabled and info.is_main:
                    _barrier()                       # ...then the others read them from the cache
                sp = split_dataset(ds, a.train_per_style, a.test_per_style, a.split, a.seed)
                for note in sp.notes:
                    print("note:", note)
                for w in _few_test_tracks(ds, sp):
                    print("warning:", w)
            if info.enabled and settings.recipe != "thesis":
                raise ValueError("training under torchrun supports --model thesis --recipe thesis only")
            if settings.recipe == "thesis":
                result = train(ds, sp, settings, a.out, progress=not a.quiet)
            else:
                from .robust import train_robust
                result = train_robust(ds, sp, settings, a.out, progress=not a.quiet)
    if result.out is None:   # a non-zero rank under torchrun: rank 0 writes and reports
        return 0
    print(summary(result.metrics))
    print(f"model: {result.out / 'model.pt'}  metrics: {result.out / 'metrics.json'}")
    return 0


def _settings_from_args(a):
    """TrainSettings for ``train``/``crossval``: the recipe's defaults, then what the command line set."""
    from .config import TrainSettings

    if a.recipe == "thesis":
        if a.model != "thesis":
            raise ValueError(f"--recipe thesis trains the thesis net only (got --model {a.model}); "
                             "use --recipe robust")
        base = TrainSettings()
    else:
        base = TrainSettings.recommended(a.model)
    changes = {k: v for k, v in (("learning_rate", a.lr), ("batch_size", a.batch_size), ("epochs", a.epochs),
                                 ("sample_rate", a.sample_rate)) if v is not None}
    from dataclasses import replace

    return replace(base, seed=a.seed, device=a.device, impl=a.impl, precision=a.precision, **changes)


def _few_test_tracks(ds, sp) -> list[str]:
    import numpy as np

    from .crossval import few_test_tracks

    tracks = np.unique(ds.track_of[sp.test])
    remap = {ds.styles.index(s): i for i, s in enumerate(sp.styles)}
    return few_test_tracks(sp.styles, np.array([remap[int(ds.track_style[t])] for t in tracks]))


def _cmd_crossval(a) -> int:
    from .crossval import check_folds, crossval

    check_folds(a.folds, a.repeats)      # before minutes of preparing the collection, not after
    settings = _settings_from_args(a)
    ds = _dataset_for(a.data, a.cache, not a.quiet, settings)
    print(f"cross-validating model {settings.model} ({settings.recipe} recipe) with {a.folds} folds on "
          f"{len(ds.tracks)} tracks", flush=True)
    log = (lambda m: print(m, flush=True) if m.startswith(("fold", "warning", "dealing")) else None) if a.quiet else \
        (lambda m: print(m, flush=True))
    rep = crossval(ds, settings, a.folds, a.out, progress=not a.quiet, log=log, repeats=a.repeats)
    if a.repeats > 1:
        for d in rep["repeats"]:
            print(f"dealing with seed {d['seed']}: clip accuracy {d['clip_accuracy_mean']:.3f}, "
                  f"track accuracy {d['track_accuracy_mean']:.3f} ({d['tracks_wrong']} tracks voted wrong)")
    over = f" over {a.repeats} dealings × {a.folds} folds" if a.repeats > 1 else ""
    print(f"clip accuracy  {rep['clip_accuracy_mean']:.3f} ± {rep['clip_accuracy_std']:.3f}{over}\n"
          f"track accuracy {rep['track_accuracy_mean']:.3f} ± {rep['track_accuracy_std']:.3f}{over}\n"
          f"{rep['seconds_per_fold']:.0f} s per fold; {a.out / 'crossval.json'}")
    return 0


def _cmd_reproduce(a) -> int:
    from dataclasses import replace

    from .reproduce import reproduce
    from .synth import SynthSpec
    from .train import TrainSettings

    spec = SynthSpec() if a.tracks_per_style is None else replace(SynthSpec(), tracks_per_style=a.tracks_per_style)
    settings = TrainSettings.thesis(learning_rate=a.lr, batch_size=a.batch_size, epochs=a.epochs,
                                    seed=a.seed, device=a.device, impl=a.impl, precision=a.precision)
    result = reproduce(a.out, spec, settings=settings, split=a.split, train_per_style=a.train_per_style,
                       test_per_style=a.test_per_style, data_dir=a.data_dir, progress=not a.quiet)
    print(f"wrote {', '.join(sorted(p.name for p in result.out.iterdir() if p.is_file()))} to {result.out}")
    return 0


def _cmd_generate(a) -> int:
    from dataclasses import replace

    from .synth import SynthSpec, generate_dataset

    spec = SynthSpec()
    if a.tracks_per_style is not None:
        spec = replace(spec, tracks_per_style=a.tracks_per_style)
    if a.seed is not None:
        spec = replace(spec, seed=a.seed)
    root = generate_dataset(a.out, spec, progress=not a.quiet)
    print(json.dumps({"out": str(root), "tracks_per_style": spec.tracks_per_style}))
    return 0


def _cmd_predict(a) -> int:
    from .checkpoint import load_model
    from .config import ThesisConfig
    from .predict import classify, format_verdict
    from .runtime import select_device

    device = select_device(a.device)
    model, styles, ckpt = load_model(a.model, device)
    cfg = ThesisConfig.from_dict(ckpt["config"])
    verdicts = []
    for v in classify(model, styles, a.inputs, cfg, a.trim, a.batch_size, device):
        verdicts.append(v)
        if v.error is not None:
            print(f"skipped {v.file}: {v.error}", file=sys.stderr)
        elif not a.json:
            print(format_verdict(v), flush=True)
    if a.json:
        print(json.dumps({"model": str(a.model), "styles": styles, "trim": a.trim,
                          "tracks": [v.to_dict() for v in verdicts]}, indent=1, ensure_ascii=False))
    if not verdicts:
        print("error: no audio files found in " + " ".join(map(str, a.inputs)), file=sys.stderr)
        return 1
    return 0 if any(v.error is None for v in verdicts) else 1


def _cmd_pretrained(a) -> int:
    from . import pretrained

    if a.ship_book_run:
        from .book.runs import PRETRAINED, ship_run, trained_model

        entry = ship_run(trained_model(False, pretrained=False, log=print))
        print(f"shipped {PRETRAINED}: {entry['file']} ({entry['bytes'] / 1e6:.1f} MB, sha256 {entry['sha256'][:12]}), "
              f"test accuracy {entry['metrics']['test_accuracy']:.3f} with float16 weights")
    if a.export is not None:
        if not a.name:
            raise ValueError("--export needs --name")
        entry = pretrained.export(a.export / "model.pt", a.name, pretrained.run_facts(a.export, a.title, a.crossval))
        print(f"shipped {a.name}: {entry['file']} ({entry['bytes'] / 1e6:.2f} MB, sha256 {entry['sha256'][:12]})")
    if a.references:
        from .book.references import HERE, make_references

        make_references()
        print(f"reference sounds written to {HERE}")
    for name in pretrained.names():
        e = pretrained.info(name)
        m = e.get("metrics", {})
        score = ", ".join(f"{k} {m[k]:.3f}" for k in ("test_accuracy", "track_accuracy", "clip_accuracy_mean",
                                                      "track_accuracy_mean") if isinstance(m.get(k), float))
        print(f"pretrained:{name}  {e['architecture']} over {', '.join(e['styles'])}; {score}\n    {e.get('title', '')}")
    return 0


def _cmd_bench(a) -> int:
    from .bench import run_bench

    parts = tuple(p.strip() for p in a.parts.split(",") if p.strip())   # run_bench names a wrong one
    run_bench(a.out, quick=a.quick, device=a.device, epochs=a.epochs, parts=parts)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)      # --help exits here, before torch is imported
    from .checkpoint import CheckpointError
    from .data import DatasetError

    try:
        return args.handler(args)
    except (DatasetError, CheckpointError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:                  # train's NotEnoughMemory says what fits
        print(f"error: {exc or 'out of memory'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted. {_interrupt_hint(args)}", file=sys.stderr)
        return 130


def _interrupt_hint(args) -> str:
    """What the user can do after Ctrl-C, promising only what works.

    Only a training run that completed an epoch has a ``checkpoint.pt`` that
    ``train --resume`` continues; preparation keeps nothing partial (its
    folder is written under a temporary name), so it is simply run again.
    """
    out = getattr(args, "resume", None) or getattr(args, "out", None)
    state = Path(out) / "checkpoint.pt" if out else None
    if state is not None and state.is_file():
        return (f"The last complete epoch is in {state}; continue with "
                f"`python -m thesis_lib train --resume {out}`.")
    if getattr(args, "handler", None) is _cmd_prepare:
        return ("Nothing partial was kept (prepared clips are written under a temporary name and renamed "
                "when complete); run the same command again to prepare from the start.")
    return "No epoch was completed, so there is nothing to resume; run the same command again."


if __name__ == "__main__":
    sys.exit(main())
