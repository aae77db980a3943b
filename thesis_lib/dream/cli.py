"""The dreaming wing's subcommands: ``dream``, ``transform``, ``style-transfer``, ``steer-compare``, ``dream-report``.

:mod:`thesis_lib.cli` registers them through :func:`add_parsers`. Every default comes
from the frozen configs of :mod:`thesis_lib.dream.settings`, which imports no torch,
so ``--help`` is instant; the handlers import the methods when they run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from .settings import AUDIO_STYLE, DREAM, EFFECTS, METHODS, TRANSFORM, DreamError

OUTPUT_SUFFIXES = (".wav", ".flac")
"""Formats written (16-bit PCM); soundfile's OGG writer is unreliable on long files."""


def _output_path(path: Path) -> Path:
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DreamError(f"--out {path}: write a .wav or .flac file (16-bit PCM), not {path.suffix or 'no suffix'!r}")
    return path


def _companion(out: Path, tag: str) -> Path:
    """``dream.wav`` -> ``dream_original.wav``: the clip the result came from, written beside it."""
    return out.with_name(f"{out.stem}_{tag}{out.suffix}")


def _common(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required, type=Path, help="trained model.pt (from train or reproduce), or pretrained:NAME (e.g. pretrained:thesis-synth)")
    p.add_argument("--clip", required=True, type=Path,
                   help="audio file; one 5-s clip is taken from its middle (or at --offset)")
    p.add_argument("--offset", type=float, default=None, help="start of the clip in seconds (default: middle)")
    p.add_argument("--out", required=True, type=Path, help="output .wav or .flac (16-bit, peak 0.9)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, ...")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON as well")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_penalty(p: argparse.ArgumentParser) -> None:
    p.add_argument("--penalty", type=float, default=EFFECTS.penalty,
                   help=f"effects: weight of the parameters' distance from neutral (default {EFFECTS.penalty:g})")
    p.add_argument("--confidence", type=float, default=EFFECTS.confidence,
                   help=f"effects: while the net's probability of the target stays below this, divide the penalty "
                        f"by {EFFECTS.relax_factor:g} and search on (at most {EFFECTS.relaxations} times): the "
                        f"smallest change that makes the net sure (default {EFFECTS.confidence:g}; 0: one search "
                        "at --penalty)")


def _confidence(a: argparse.Namespace) -> float | None:
    """``--confidence`` as :func:`~thesis_lib.dream.effects.effect_steer` takes it (0: None), checked."""
    from .effects import check_confidence

    confidence = a.confidence or None
    check_confidence(confidence)
    return confidence


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``dream``, ``transform``, ``style-transfer`` and ``dream-report`` to ``sub``.

    Each parser names its handler (``set_defaults(handler=...)``); the handlers import
    torch and the methods only when they run.
    """
    p = sub.add_parser("dream", help="dream a clip on one layer of a trained net (thesis 4.3)",
                       description="Freeze the trained net, make the clip's waveform the variable and maximise "
                                   "½Σy² of LAYER's output (or, with --guide, the dot product with the guide's "
                                   "output). Writes OUT (peak 0.9, 16-bit) and OUT_original beside it; prints "
                                   "the objective before and after.")
    p.set_defaults(handler=cmd_dream)
    _common(p)
    p.add_argument("--layer", default="conv3",
                   help="input_norm, conv1, norm1, conv2, norm2, conv3, norm3, fc or out (default conv3)")
    p.add_argument("--method", choices=METHODS, default="lbfgs",
                   help="lbfgs: the thesis's L-BFGS-B (default); ascent: DeepDream's jittered, multi-octave steps")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"L-BFGS-B iterations (default {DREAM.iterations}) or ascent steps per octave "
                        f"(default {DREAM.steps_per_octave})")
    p.add_argument("--channel", type=int, default=None, help="dream one filter of LAYER only")
    p.add_argument("--guide", type=Path, default=None, help="guide audio for guided dreaming (e.g. a metal track)")
    p.add_argument("--guide-mode", choices=("aligned", "average"), default=DREAM.guide_mode)
    p.add_argument("--unbounded", action="store_true",
                   help=f"L-BFGS-B without the [-{DREAM.bound}, {DREAM.bound}] box on the samples")
    p.add_argument("--random-net", action="store_true",
                   help="control: dream on an untrained net of the same architecture instead")

    p = sub.add_parser("transform", help="inversion, Gatys style transfer, class or effect steering on a trained net",
                       description="invert: rebuild the clip from noise out of LAYER's output and report SNR and "
                                   "spectral distance. gatys: content of --clip, Gram style of --style, on the "
                                   "thesis net. steer: push the clip's samples toward --target's class with a "
                                   "content term. effects: find the gain, EQ, drive and compressor settings that "
                                   "make the net hear --target (an audible change), scored by --judge, a second "
                                   "model the search never sees.")
    p.set_defaults(handler=cmd_transform)
    _common(p)
    p.add_argument("--mode", required=True, choices=("invert", "gatys", "steer", "effects"))
    p.add_argument("--layer", default="conv1", help="invert: layer whose output is matched (default conv1)")
    p.add_argument("--style", type=Path, default=None, help="gatys: audio whose style is wanted")
    p.add_argument("--target", default=None, help="steer, effects: style name to push toward (default: the other one)")
    p.add_argument("--judge", type=Path, default=None,
                   help="effects: a second trained model (any model train writes, e.g. --model baseline) that scores the "
                        "clip before and after; the transformation counts only when it agrees")
    _add_penalty(p)
    p.add_argument("--balanced", action="store_true", help="gatys: weigh style and content equally at the start")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"L-BFGS-B iterations (default {TRANSFORM.iterations}; steer {TRANSFORM.steer_iterations}; "
                        f"effects {EFFECTS.iterations})")

    p = sub.add_parser("style-transfer", help="audio style transfer with random STFT filters (Ulyanov & Lebedev)",
                       description="Re-sound the content clip with the style clip's timbre: log-magnitude STFT, "
                                   "one wide layer of random 1-D filters, content + Gram style loss, L-BFGS-B, "
                                   "Griffin-Lim phase. No trained net needed.")
    p.set_defaults(handler=cmd_style_transfer)
    _common(p, model_required=False)
    p.add_argument("--style", required=True, type=Path, help="audio whose style (timbre) is wanted")
    p.add_argument("--iterations", type=int, default=AUDIO_STYLE.iterations)
    p.add_argument("--filters", type=int, default=AUDIO_STYLE.filters)
    p.add_argument("--content-weight", type=float, default=AUDIO_STYLE.content_weight)
    p.add_argument("--init", choices=("noise", "content"), default=AUDIO_STYLE.init,
                   help=f"start from the content's log-magnitude or from noise (the paper); default {AUDIO_STYLE.init}")
    p.add_argument("--griffin-lim-iterations", type=int, default=AUDIO_STYLE.griffin_lim_iterations,
                   help="phase-recovery iterations")
    p = sub.add_parser("steer-compare", help="sample-level against effect steering over many clips, judged",
                       description="Steer N clips (not of --target) of DATA toward --target twice -- by changing "
                                   "the samples and through the effect chain -- with --model, and count how often "
                                   "--model and the independent --judge (never seen by the search) hear the "
                                   "target afterwards. Writes OUT (JSON: the summary, each clip's track and the "
                                   "effect parameters in words) and prints the side-by-side table.")
    p.set_defaults(handler=cmd_steer_compare)
    p.add_argument("--model", required=True, type=Path, help="the steering classifier: model.pt or pretrained:NAME")
    p.add_argument("--judge", required=True, type=Path, help="a second trained model that only scores the results")
    p.add_argument("--data", required=True, type=Path, help="audio folder (DATA/<style>/...) or prepared folder")
    p.add_argument("--target", required=True, help="style to steer toward (a style of both models)")
    p.add_argument("--clips", type=int, default=16, help="how many clips (default 16)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="draw only from the test tracks of train's split with this seed: the songs a model "
                        "trained by `train --seed S` never heard")
    p.add_argument("--seed", type=int, default=0, help="which clips are drawn")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"L-BFGS-B iterations of both searches (default: steer {TRANSFORM.steer_iterations}, "
                        f"effects {EFFECTS.iterations})")
    _add_penalty(p)
    p.add_argument("--strengths", type=float, nargs="+", default=(), metavar="PENALTY",
                   help="also steer the same clips through the effects at each of these penalties (smaller: "
                        "the controls may move further) and print how often the judge agrees at each")
    p.add_argument("--out", required=True, type=Path, help="JSON file for the results")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("dream-report", help="run and time every dreaming/transformation method once",
                       description="Every method with its default settings on one content clip (and a style/guide "
                                   "clip): objective before/after, seconds, and numbers that describe each "
                                   "sound. Writes OUT/report.md, OUT/report.json and every sound as WAV.")
    p.set_defaults(handler=cmd_dream_report)
    p.add_argument("--model", required=True, type=Path, help="trained model.pt, or pretrained:NAME")
    p.add_argument("--clip", required=True, type=Path, help="content clip's audio (e.g. a C-pop track)")
    p.add_argument("--style", required=True, type=Path, help="style/guide audio (e.g. a metal track)")
    p.add_argument("--offset", type=float, default=None, help="start of the content clip in seconds")
    p.add_argument("--out", required=True, type=Path, help="folder for the report and the sounds")
    p.add_argument("--steer-data", type=Path, default=None, help="prepared folder whose clips are steered")
    p.add_argument("--steer-clips", type=int, default=8, help="how many clips to steer (default 8)")
    p.add_argument("--target", default=None, help="style to steer toward (default: the model's second style)")
    p.add_argument("--quick", action="store_true", help="a few iterations per method (a smoke test)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")


def _load(a: argparse.Namespace, require: str | None = "StyleNet"):
    """The trained net of ``--model``; dreaming needs the thesis net, steering takes any classifier."""
    from ..checkpoint import load_model
    from ..runtime import select_device

    model, styles, _ = load_model(a.model, select_device(a.device), require=require)
    return model, styles


def _report(title: str, numbers: dict, as_json: bool) -> None:
    print(title)
    if as_json:
        print(json.dumps(numbers, default=float, indent=1))


def cmd_dream(a: argparse.Namespace) -> int:
    """``dream``: the thesis's layer dreaming (or DeepDream's ascent, guided or not) on one clip."""
    from ..audio import write_wav
    from .layers import dream, guided_dream, load_clip, random_net_like

    out = _output_path(a.out)
    model, _ = _load(a)
    clip = load_clip(a.clip, a.offset, model.cfg)
    if a.random_net:
        model = random_net_like(model, DREAM.seed)
    cfg = replace(DREAM, bound=None) if a.unbounded else DREAM
    if a.guide is not None:
        guide = load_clip(a.guide, None, model.cfg)
        r = guided_dream(model, clip, guide, a.layer, a.method, a.guide_mode, a.iterations, cfg, not a.quiet)
    else:
        r = dream(model, clip, a.layer, a.method, a.iterations, a.channel, cfg, not a.quiet)
    write_wav(out, r.audio, model.cfg.sample_rate)
    write_wav(_companion(out, "original"), clip, model.cfg.sample_rate)
    _report(f"{r.objective} ({r.method}{', random net' if a.random_net else ''}): "
            f"before {r.objective_before:.6g}, after {r.objective_after:.6g} "
            f"(written at peak {model.cfg.peak}: {r.objective_written:.6g}); "
            f"{r.iterations} iterations in {r.seconds:.1f} s\nwrote {out} and {_companion(out, 'original')}",
            r.summary(), a.json)
    return 0


def _target_index(target: str | None, styles: list[str], predicted: int) -> int:
    if target is None:
        if len(styles) != 2:
            raise DreamError(f"--target is needed with {len(styles)} styles: one of {styles}")
        return 1 - predicted
    if target not in styles:
        raise DreamError(f"--target {target!r} is not a style of this model; choose from {styles}")
    return styles.index(target)


def cmd_transform(a: argparse.Namespace) -> int:
    """``transform``: inversion, Gatys style transfer or class steering of one clip."""
    import torch

    from ..audio import write_wav
    from .layers import load_clip
    from .transform import gatys_transfer, invert, steer

    out = _output_path(a.out)
    if a.judge is not None and a.mode != "effects":
        raise DreamError(f"--judge scores effect steering only (--mode effects), not --mode {a.mode}")
    model, styles = _load(a, require=None if a.mode in ("effects", "steer") else "StyleNet")
    clip = load_clip(a.clip, a.offset, model.cfg)
    if a.mode == "effects":
        return _effects(a, model, styles, clip, out)
    if a.mode == "invert":
        r = invert(model, clip, a.layer, a.iterations or TRANSFORM.iterations, progress=not a.quiet)
        title = (f"inversion from {a.layer}: feature distance {r.distance_before:.4g} -> {r.distance_after:.4g}; "
                 f"SNR {r.snr_db:.2f} dB, log-spectral distance {r.spectral_distance_db:.2f} dB; {r.seconds:.1f} s")
    elif a.mode == "gatys":
        if a.style is None:
            raise DreamError("transform --mode gatys needs --style AUDIO")
        r = gatys_transfer(model, clip, load_clip(a.style, None, model.cfg), a.iterations or TRANSFORM.iterations,
                           balanced=a.balanced, progress=not a.quiet)
        title = (f"Gatys on the thesis net: content loss {r.content_loss_before:.4g} -> {r.content_loss_after:.4g}, "
                 f"style loss {r.style_loss_before:.4g} -> {r.style_loss_after:.4g}; flatness "
                 f"{r.metrics['flatness']:.3f} (1 = white noise); {r.seconds:.1f} s")
    else:
        device = next(model.parameters()).device
        with torch.no_grad():
            predicted = int(model.predict_proba(torch.as_tensor(clip, device=device)[None]).argmax())
        target = _target_index(a.target, styles, predicted)
        r = steer(model, clip, target, a.iterations or TRANSFORM.steer_iterations, progress=not a.quiet)
        title = (f"steering toward {styles[target]}: p({styles[target]}) {r.p_target_before:.3f} -> "
                 f"{r.p_target_after:.3f}, predicted {styles[r.predicted_before]} -> {styles[r.predicted_after]}; "
                 f"SNR {r.snr_db:.2f} dB; {r.seconds:.1f} s")
    write_wav(out, r.audio, model.cfg.sample_rate)
    write_wav(_companion(out, "original"), clip, model.cfg.sample_rate)
    _report(f"{title}\nwrote {out} and {_companion(out, 'original')}", r.summary(), a.json)
    return 0


def _effects(a: argparse.Namespace, model, styles: list[str], clip, out: Path) -> int:
    """``transform --mode effects``: effect steering of one clip, judged by ``--judge`` when given."""
    import torch

    from ..audio import write_wav
    from ..runtime import device_of
    from .effects import Judge, effect_steer

    judge = Judge.load(a.judge, device_of(model)) if a.judge is not None else None
    with torch.no_grad():
        predicted = int(model.predict_proba(torch.as_tensor(clip, device=device_of(model))[None]).argmax())
    target = _target_index(a.target, styles, predicted)
    if judge is not None:
        judge.index(styles[target])      # refuse a judge without the target before the search, not after
    r = effect_steer(model, clip, target, a.iterations or EFFECTS.iterations, a.penalty, judge, styles,
                     progress=not a.quiet, confidence=_confidence(a))
    name = styles[target]
    lines = [f"effects toward {name}: {r.iterations} L-BFGS-B iterations in {r.seconds:.1f} s",
             f"penalty {r.penalty:.3g}" + (f" (relaxed {r.searches - 1} times from {a.penalty:g} to make the net "
                                           "sure)" if r.searches > 1 else ""),
             f"parameters: {r.words}",
             "  " + ", ".join(f"{k} {v:.2f}" for k, v in r.params.items()),
             f"net:   p({name}) {r.p_target_before:.3f} -> {r.p_target_after:.3f}, predicted "
             f"{styles[r.predicted_before]} -> {styles[r.predicted_after]}" + (" (flipped)" if r.flipped else "")]
    if judge is not None:
        js = judge.styles
        lines.append(f"judge: p({name}) {r.judge_p_target_before:.3f} -> {r.judge_p_target_after:.3f}, predicted "
                     f"{js[r.judge_predicted_before]} -> {js[r.judge_predicted_after]}"
                     + (" (agrees: flipped)" if r.judge_flipped else "") + f" [{judge.name}]")
    m = r.measures
    lines.append(f"measures (loudness-matched, both at peak {model.cfg.peak}): loudness change "
                 f"{m['loudness_change_db']:+.1f} dB, SNR {m['snr_db']:.1f} dB, spectral distance "
                 f"{m['spectral_distance_db']:.1f} dB, long-term spectrum {m['ltas_db']:.1f} dB, envelope "
                 f"correlation {m['envelope_corr']:.2f}")
    write_wav(out, r.audio, model.cfg.sample_rate)
    write_wav(_companion(out, "original"), r.original, model.cfg.sample_rate)
    lines.append(f"wrote {out} and {_companion(out, 'original')}")
    _report("\n".join(lines), r.summary(), a.json)
    return 0


def cmd_style_transfer(a: argparse.Namespace) -> int:
    """``style-transfer``: Ulyanov & Lebedev's random-filter STFT transfer between two clips."""
    from ..audio import write_wav
    from ..config import THESIS
    from .layers import load_clip
    from ..runtime import select_device
    from .audio_style import stft_style_transfer

    out = _output_path(a.out)
    content, style = load_clip(a.clip, a.offset, THESIS), load_clip(a.style, None, THESIS)
    cfg = replace(AUDIO_STYLE, iterations=a.iterations, filters=a.filters, content_weight=a.content_weight,
                  init=a.init, griffin_lim_iterations=a.griffin_lim_iterations)
    r = stft_style_transfer(content, style, cfg, select_device(a.device), not a.quiet)
    write_wav(out, r.audio, THESIS.sample_rate)
    write_wav(_companion(out, "content"), content, THESIS.sample_rate)
    write_wav(_companion(out, "style"), style, THESIS.sample_rate)
    m = r.metrics
    _report(f"STFT style transfer ({cfg.filters} random filters): content loss {r.content_loss_before:.4g} -> "
            f"{r.content_loss_after:.4g}, style loss {r.style_loss_before:.4g} -> {r.style_loss_after:.4g}\n"
            f"long-term spectrum distance to style {m['style_ltas_db']:.2f} dB, to content "
            f"{m['content_ltas_db']:.2f} dB; envelope correlation with content {m['envelope_corr']:.2f}; "
            f"{r.seconds:.1f} s\nwrote {out}", r.summary(), a.json)
    return 0


def _steer_clips(data: Path, n: int, target: int, styles: list[str], seed: int = 0):
    """``n`` random clips of a prepared folder that are not of the target style."""
    import numpy as np

    from ..data import PreparedDataset

    ds = PreparedDataset.load(data)
    name = styles[target]
    pool = np.flatnonzero(ds.style_of != ds.styles.index(name)) if name in ds.styles else np.arange(len(ds))
    pick = np.sort(np.random.default_rng(seed).choice(pool, min(n, pool.size), replace=False))
    return np.asarray(ds.clips[pick], dtype=np.float32)


def cmd_steer_compare(a: argparse.Namespace) -> int:
    """``steer-compare``: :func:`~thesis_lib.dream.effects.compare_steering` over clips of a collection."""
    import numpy as np

    from ..data import PreparedDataset, prepare_dataset
    from ..robust import clip_rate_problem
    from ..runtime import device_of
    from .effects import (Judge, check_penalty, collection_clips, compare_steering, comparison_markdown,
                          steering_strength, strength_markdown)

    model, styles = _load(a, require=None)
    if a.target not in styles:
        raise DreamError(f"--target {a.target!r} is not a style of the model; choose from {styles}")
    if a.clips < 1:
        raise DreamError(f"--clips must be at least 1, not {a.clips}")
    judge = Judge.load(a.judge, device_of(model))
    if (a.data / "index.json").is_file():
        ds = PreparedDataset.load(a.data)
    else:
        ds = prepare_dataset(a.data, cfg=model.cfg, progress=not a.quiet)
    problem = clip_rate_problem(ds, model.cfg, "the model")
    if problem:
        raise DreamError(f"{problem}; give the audio folder instead")
    pick = collection_clips(ds, a.target, a.clips, a.split_seed, a.seed)
    clips = np.stack([np.asarray(ds.clips[i], np.float32) for i in pick])
    iterations = {} if a.iterations is None else {"steer_iterations": a.iterations, "effect_iterations": a.iterations}
    for penalty in (a.penalty, *a.strengths):    # before minutes of steering, not after
        check_penalty(penalty)
    confidence = _confidence(a)
    target = styles.index(a.target)
    summary, verdicts = compare_steering(model, styles, clips, target, judge, penalty=a.penalty,
                                         progress=not a.quiet, confidence=confidence, **iterations)
    print(comparison_markdown(summary))
    strengths = []
    if a.strengths:
        strengths = steering_strength(model, styles, clips, target, judge, tuple(a.strengths),
                                      **({} if a.iterations is None else {"iterations": a.iterations}),
                                      progress=not a.quiet)
        print(strength_markdown([summary["effects"], *strengths]))     # the default's row names its penalty and confidence
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"summary": summary, "penalty": a.penalty, "confidence": confidence,
                                 "strengths": strengths,
                                 "model": str(a.model), "judge": str(a.judge),
                                 "clips": [{"track": ds.tracks[ds.track_of[i]], "clip": int(i),
                                            "effects": v.words, "net_after": styles[v.net_after]}
                                           for i, v in zip(pick, verdicts["effects"])]},
                                default=float, indent=1, ensure_ascii=False))
    print(f"wrote {a.out}")
    return 0


def cmd_dream_report(a: argparse.Namespace) -> int:
    """``dream-report``: every method once, timed and described (the book's closing note)."""
    from .layers import load_clip
    from .report import markdown, measure

    model, styles = _load(a)
    content, style = load_clip(a.clip, a.offset, model.cfg), load_clip(a.style, None, model.cfg)
    target = styles.index(a.target) if a.target in styles else min(1, len(styles) - 1)
    if a.target is not None and a.target not in styles:
        raise DreamError(f"--target {a.target!r} is not a style of this model; choose from {styles}")
    clips = _steer_clips(a.steer_data, a.steer_clips, target, styles) if a.steer_data else None
    report = measure(model, content, style, clips, target, a.out, a.quick, not a.quiet)
    print(markdown(report))
    print(f"wrote {a.out / 'report.md'}, {a.out / 'report.json'} and the sounds")
    return 0
