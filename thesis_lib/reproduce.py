"""The thesis's first experiment, end to end, on the built-in default data.

Compose the two synthetic styles, prepare them exactly as the thesis prepared
its MP3s, train the thesis net with the thesis's optimiser for 20 epochs,
evaluate, and write the figures and tables of thesis chapter 5 beside ours.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .config import THESIS, THESIS_SECONDS_PER_EPOCH, THESIS_TABLE1, THESIS_TEST_ACCURACY, ThesisConfig
from .data import default_cache_dir, describe_report, prepare_dataset, split_dataset
from .synth import SynthSpec, generate_dataset
from .train import TrainResult, TrainSettings, train


def default_data_dir(spec: SynthSpec = SynthSpec()) -> Path:
    """Where the default tracks of ``spec`` are composed (shared by every chapter)."""
    return default_cache_dir() / "synth" / spec.key()


def table1(history: list[dict]) -> str:
    """Markdown: our loss and seconds per epoch beside the thesis's Table 1."""
    lines = ["| epoch | thesis loss | our loss | thesis s (TITAN X) | our s |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    ours = {h["epoch"]: h for h in history}
    for epoch, loss, secs in THESIS_TABLE1:
        h = ours.get(epoch)
        lines.append(f"| {epoch} | {loss:.3g} | {h['train_loss']:.3g} | {secs:.3f} | {h['seconds']:.3f} |"
                     if h else f"| {epoch} | {loss:.3g} | – | {secs:.3f} | – |")
    for epoch in sorted(e for e in ours if e > len(THESIS_TABLE1)):
        h = ours[epoch]
        lines.append(f"| {epoch} | – | {h['train_loss']:.3g} | – | {h['seconds']:.3f} |")
    return "\n".join(lines)


def summary(metrics: dict) -> str:
    """Three lines comparing this run with the thesis's headline numbers.

    The thesis's seconds per epoch are its net's; a run of another model (``train``'s
    default fusion, say) says so instead of setting its epoch beside them.
    """
    from .robust import fitted_in_closed_form

    model = metrics.get("model", "thesis")
    speed = (f"(thesis {THESIS_SECONDS_PER_EPOCH} on a GTX TITAN X)" if model == "thesis"
             else f"(the {model} model; the thesis's {THESIS_SECONDS_PER_EPOCH} s were its own net's)")
    timing = (f"fitted in      {metrics['train_seconds']:.1f} s on {metrics['device']} (the {model} model has no "
              "epochs: fixed features, logistic regression)" if fitted_in_closed_form(model) and "train_seconds" in metrics
              else f"seconds/epoch  {metrics['seconds_per_epoch']:.2f} on {metrics['device']} {speed}")
    return (f"test accuracy  {metrics['test_accuracy']:.4f} (thesis {THESIS_TEST_ACCURACY:.4f})\n"
            f"track accuracy {metrics['track_accuracy']:.4f} over {metrics['n_test_tracks']} test tracks\n"
            + timing)


def reproduce(out: str | Path, spec: SynthSpec = SynthSpec(), cfg: ThesisConfig = THESIS,
              settings: TrainSettings | None = None, split: str = "track",
              train_per_style: int | None = None, test_per_style: int | None = None,
              data_dir: str | Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> TrainResult:
    """Run the whole experiment into ``out``; returns the trained model and its metrics.

    Writes ``model.pt``, ``metrics.json``, ``figure21.png`` (loss curve beside the
    thesis's), ``table1.md`` and ``report.json`` (what preparation skipped).
    """
    from . import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or TrainSettings.thesis(cfg)
    data_dir = Path(data_dir) if data_dir else default_data_dir(spec)
    log(f"1/4 composing {spec.tracks_per_style} tracks per style into {data_dir}")
    generate_dataset(data_dir, spec, progress=progress)
    log("2/4 preparing clips (8 kHz, peak 0.9, 30 s trimmed at each end, 5-second clips)")
    ds = prepare_dataset(data_dir, cfg=cfg, progress=progress)
    log(describe_report(ds))
    sp = split_dataset(ds, train_per_style or cfg.train_per_style, test_per_style or cfg.test_per_style,
                       split=split, seed=settings.seed)
    for note in sp.notes:
        log("note: " + note)
    log(f"3/4 training on {len(sp.train)} clips, testing on {len(sp.test)} (split by {split}); "
        f"lr {settings.learning_rate}, batch {settings.batch_size}, {settings.epochs} epochs")
    result = train(ds, sp, settings, out, cfg, progress=progress, log=log)
    log("4/4 writing figure21.png and table1.md")
    fig = plots.loss_curve(result.history, title="Training loss (cf. thesis Figure 21)")
    fig.savefig(out / "figure21.png", dpi=120)
    (out / "table1.md").write_text(table1(result.history) + "\n")
    (out / "report.json").write_text(json.dumps(ds.report, indent=1, ensure_ascii=False))
    (out / "synth.json").write_text(json.dumps(asdict(spec), indent=1))
    log(summary(result.metrics))
    return result
