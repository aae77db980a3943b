"""Chapter 4b's real music: the data, five models cross-validated (cached), the tracks they get wrong, the leak.

* :func:`music_data` opens the reader's folder or the free collection (built
  with :func:`thesis_lib.free_music.build_collection` when missing), or, in
  ``small`` mode, the built-in synthetic data;
* :func:`compared_settings` are the five contenders: the thesis net with the
  thesis's settings, the log-mel CNN (robust recipe), the log-mel baseline, the
  pretrained musicnn tagger's linear probe (:mod:`thesis_lib.musicnn`) and
  ``train``'s default, the last two fused (:mod:`thesis_lib.fusion`);
* :func:`cached_crossval` runs :func:`thesis_lib.crossval.crossval` once per
  data, settings and folds and keeps the report in
  ``default_cache_dir()/book/cv-<key>/crossval.json`` (file-locked, as the
  book's trained runs are), so a second build takes seconds;
* :func:`crossval_table` and :func:`wrong_tracks` summarise the reports;
* :func:`leak_comparison` trains on the same data split by track and by clip
  (same test clips per style), over a few seeds, also cached;
* :func:`real_steering` steers songs of the free collection toward metal with the shipped
  real-music net, by samples and through the effect chain, judged by a second model (cached);
  :func:`real_steering_strength` steers the same clips through the effects at smaller penalties.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..config import TrainSettings
from ..data import PreparedDataset, Split, default_cache_dir, prepare_dataset
from . import runs

CACHE_FORMAT = "book-crossval/2"
"""Part of every cache key; bump it when what is cached changes (2: per-track votes)."""

NOT_IN_KEY = ("device", "impl")
"""Settings that change where and how fast a run goes, not its result."""


def music_data(data: str | None, small: bool, build: bool = True, progress: bool = False,
               log=print) -> tuple[PreparedDataset, bool]:
    """The chapter's data and whether it is real music.

    ``small`` (CI: no network) always gives the built-in synthetic data. Otherwise
    ``data`` (``~`` expanded) is prepared (cached); a missing folder is built as
    the free collection when ``build`` is true.
    """
    if small:
        return runs.dataset(True), False
    path = Path(os.path.expanduser(str(data)))
    if not path.exists():
        if not build:
            raise FileNotFoundError(f"{data}: no such folder (build the free collection with "
                                    f"`python -m thesis_lib free-music --out {data}`)")
        from ..free_music import build_collection

        log(f"building the free collection in {data} (apt-get download, about 0.84 GB of .deb files, cached)")
        build_collection(path, progress=progress)
    return prepare_dataset(path, progress=progress), True


def compared_settings(small: bool, epochs: int | None = None, seed: int = 0,
                      device: str = "auto") -> dict[str, TrainSettings]:
    """The five contenders, by display name (``train``'s default last); ``small`` shrinks epochs
    (and the thesis's batch; the probes have none)."""
    over = {"seed": seed, "device": device}
    if small or epochs:
        over["epochs"] = epochs or runs.SMALL_EPOCHS
    # float32, the thesis's arithmetic (``auto`` would pick bf16 on CPUs and GPUs that have it)
    thesis = TrainSettings.thesis(**over, precision="fp32", **({"batch_size": runs.SMALL_BATCH} if small else {}))
    return {"thesis net, thesis settings": thesis,
            "log-mel CNN, robust recipe": TrainSettings.recommended("mel", **over),
            "log-mel baseline": TrainSettings.recommended("baseline", **over),
            "pretrained tagger (musicnn), linear probe": TrainSettings.recommended("musicnn", **over),
            "two taggers and baseline fused (train's default)": TrainSettings.recommended(**over)}


def data_key(ds: PreparedDataset) -> str:
    """The prepared data's own key (its files and pre-processing), from ``index.json``."""
    return json.loads((Path(ds.path) / "index.json").read_text())["key"]


def model_identity(model: str) -> dict:
    """What a model name stands for beyond the settings, when it is more than its name: a fusion's
    members (``fusion`` was the CNN and the baseline before the tagger joined), the pretrained
    taggers' weights and how linear probes are fitted (unweighted before they balanced the styles).
    Empty for the others, so their cached results keep their keys."""
    from ..fusion import FUSIONS, MEMBER_MODELS
    from ..musicnn import tagger_weights
    from ..robust import CLOSED_FORM

    out: dict = {}
    parts = [MEMBER_MODELS[m] for m in FUSIONS.get(model, ())] or [model]
    if model in FUSIONS:
        out["members"] = list(FUSIONS[model])
    if "musicnn" in parts:
        out["tagger"] = tagger_weights("musicnn")[1][:16]
    if "musicnn-vgg" in parts:
        out["vgg_tagger"] = tagger_weights("vgg")[1][:16]
    if set(CLOSED_FORM) & set(parts):          # a linear probe: it weighs every style the same (baseline.style_weights)
        out["probe_fit"] = "style-balanced"
    return out


def cache_key(ds: PreparedDataset, settings: TrainSettings, what: dict) -> str:
    """Key of a cached result: the data, every setting that changes the result, and ``what`` was run."""
    s = {k: v for k, v in asdict(settings).items() if k not in NOT_IN_KEY}
    if s.get("sample_rate") is None:   # the thesis's rate, what every key meant before the field existed
        s.pop("sample_rate", None)
    if s.get("model") != "thesis":      # only the thesis net's fast path has a precision to choose
        s["precision"] = "fp32"
    s.update(model_identity(s.get("model", "thesis")))
    blob = json.dumps({"format": CACHE_FORMAT, "data": data_key(ds), "settings": s, **what}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cached(name: str, key: str, compute) -> tuple[dict, bool]:
    out = default_cache_dir() / "book" / f"{name}-{key}"
    done = out / f"{name}.json"
    if done.is_file():
        return json.loads(done.read_text()), True
    with runs._lock(out.with_name(out.name + ".lock")):   # two notebooks asking at once compute it once
        if done.is_file():
            return json.loads(done.read_text()), True
        from ..train import jsonable

        result = jsonable(compute())
        out.mkdir(parents=True, exist_ok=True)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False))
        tmp.replace(done)
    return result, False


def cached_crossval(ds: PreparedDataset, settings: TrainSettings, folds: int, log=None,
                    repeats: int = 1) -> tuple[dict, bool]:
    """:func:`thesis_lib.crossval.crossval` of ``settings`` on ``ds``, from the cache or run now; (report, reused).

    ``repeats`` > 1: the folds dealt that many times (repeated cross-validation). The report's
    ``warnings`` lists what crossval warned (a style with few test tracks, say).
    """
    from ..crossval import crossval

    def compute() -> dict:
        with warnings.catch_warnings(record=True) as caught:   # kept in the report, not printed
            warnings.simplefilter("always")
            rep = crossval(ds, settings, folds, progress=log is not None, log=log or (lambda m: None),
                           repeats=repeats)
        rep["warnings"] = sorted({str(w.message) for w in caught})
        return rep

    dealt = {"repeats": repeats} if repeats > 1 else {}     # one dealing: the key it always had
    return _cached("cv", cache_key(ds, settings, {"folds": folds, **dealt}), compute)


def crossval_table(reports: dict[str, dict]) -> list[dict]:
    """One row per model: clip and track accuracy as mean ± spread over folds, and seconds per training."""
    return [{"model and settings": name,
             "clip accuracy": f"{r['clip_accuracy_mean']:.3f} ± {r['clip_accuracy_std']:.3f}",
             "track accuracy": f"{r['track_accuracy_mean']:.3f} ± {r['track_accuracy_std']:.3f}",
             "seconds per training": round(r["seconds_per_fold"], 1 if r["seconds_per_fold"] < 10 else None)}
            for name, r in reports.items()]


def wrong_tracks(report: dict) -> list[dict]:
    """The tracks a cross-validation voted wrong (each tested once, by the model of its fold), surest first."""
    rows = [{**r, "fold": f["fold"]} for f in report["folds"] for r in f.get("track_predictions", [])
            if r["predicted"] != r["style"]]
    return sorted(rows, key=lambda r: -r["probability"])


def shared_mistakes(report: dict, other: dict) -> list[str]:
    """The tracks that two cross-validations (two models, the same tracks) both voted wrong, in
    ``report``'s order. Chapter 4b: a mistake two different models share points at the track --
    its instruments, its production, the style its package gives it -- more than at either model."""
    theirs = {r["track"] for r in wrong_tracks(other)}
    return [r["track"] for r in wrong_tracks(report) if r["track"] in theirs]


def track_clip(ds: PreparedDataset, track_name: str) -> np.ndarray:
    """The middle clip of a track, by name (float32 samples)."""
    t = ds.tracks.index(track_name)
    rows = np.flatnonzero(ds.track_of == t)
    return np.array(ds.clips[rows[len(rows) // 2]], dtype=np.float32)


def leak_splits(ds: PreparedDataset, seed: int, folds: int = 4) -> tuple[Split, Split]:
    """A split by track (one fold of :func:`~thesis_lib.crossval.track_folds`) and one by clip with as many test clips per style."""
    from ..crossval import track_folds

    styles = [s for s, n in ds.clips_per_style().items() if n > 0]
    test_tracks = track_folds(ds.track_style, folds, seed)[0]
    by_track_test = np.flatnonzero(np.isin(ds.track_of, test_tracks))
    rng = np.random.default_rng(seed)
    by_clip_test = np.concatenate([
        rng.choice(np.flatnonzero(ds.style_of == s), int(np.sum(ds.style_of[by_track_test] == s)), replace=False)
        for s in np.unique(ds.style_of)])
    everything = np.arange(len(ds))
    return (Split(np.setdiff1d(everything, by_track_test), np.sort(by_track_test), styles, "track", []),
            Split(np.setdiff1d(everything, by_clip_test), np.sort(by_clip_test), styles, "clip", []))


def leak_comparison(ds: PreparedDataset, settings: TrainSettings, seeds: int, log=None) -> tuple[dict, bool]:
    """Test accuracy of ``settings`` on :func:`leak_splits` for seeds ``0..seeds-1``, cached; (result, reused).

    The result has ``runs`` (seed, split, clip accuracy, share of test clips whose
    track is also in training) and per split the mean and spread over seeds.
    """
    from ..robust import prepared_for, train_any

    def compute() -> dict:
        data = prepared_for(ds, settings, log=log or (lambda m: None))   # the rate this model reads
        rows = []
        for seed in range(seeds):
            for sp in leak_splits(data, seed):
                r = train_any(data, sp, replace(settings, seed=seed), out=None, progress=False,
                              log=log or (lambda m: None))
                shared = np.isin(data.track_of[sp.test], data.track_of[sp.train]).mean()
                rows.append({"seed": seed, "split": sp.mode, "test clips": int(len(sp.test)),
                             "accuracy": float(r.metrics["test_accuracy"]), "shared": float(shared)})
        summary = {k: {"mean": float(np.mean([r["accuracy"] for r in rows if r["split"] == k])),
                       "std": float(np.std([r["accuracy"] for r in rows if r["split"] == k])),
                       "shared": float(np.mean([r["shared"] for r in rows if r["split"] == k]))}
                   for k in ("track", "clip")}
        return {"runs": rows, **summary, "model": settings.model, "seeds": seeds}

    return _cached("leak", cache_key(ds, settings, {"seeds": seeds}), compute)


def _steering_setup(ds: PreparedDataset, net: str, target: str, clips: int, quiet):
    """What both steering experiments share: the shipped net, the judge (the log-mel baseline fitted
    on the training tracks of split seed 0), and the held-out clips not of ``target``."""
    from .. import pretrained
    from ..data import split_dataset
    from ..dream.effects import Judge, collection_clips
    from ..robust import clip_rate_problem, prepared_for, train_any

    model, styles, _ = pretrained.load(net)
    settings = TrainSettings.recommended("baseline")
    data = prepared_for(ds, settings, log=quiet)
    problem = clip_rate_problem(data, model.cfg, f"the shipped net {net!r}")
    if problem:
        raise ValueError(problem)
    sp = split_dataset(data, settings.applied_to().train_per_style, settings.applied_to().test_per_style,
                       "track", 0)
    judge = Judge(train_any(data, sp, settings, progress=False, log=quiet).model, sp.styles,
                  "log-mel baseline, 16 kHz, the same training tracks")
    pick = collection_clips(data, target, clips, split_seed=0, seed=0)
    x = np.stack([np.asarray(data.clips[i], np.float32) for i in pick])
    return model, styles, judge, data, pick, x


def _search_settings() -> dict:
    """Every setting that decides a steering result, so a change of any is a new result: the
    whole effect search (its controls, starts, EQ bands, penalty and relaxing) and the sample-level
    steering it is compared with."""
    from ..dream import settings

    return {"effects": asdict(settings.EFFECTS),
            "samples": {k: getattr(settings.TRANSFORM, k) for k in ("steer_iterations", "steer_content_weight")}}


def _steering_key(ds: PreparedDataset, net: str, clips: int, target: str, **more) -> str:
    """The steering results' key: the data, the judge's fit (the log-mel baseline's settings and
    probe fit), the shipped net's weights, the clips, :func:`_search_settings` and ``more``."""
    from .. import pretrained

    return cache_key(ds, TrainSettings.recommended("baseline"),
                     {"steer": net, "clips": clips, "target": target,
                      "net_sha256": pretrained.info(net)["sha256"], "search": _search_settings(), **more})


def _shipped_net_data(ds: PreparedDataset, net: str) -> bool:
    """Whether ``ds`` is the collection the shipped ``net`` was trained on (styles, tracks per style)."""
    from .. import pretrained

    entry = pretrained.info(net)
    return sorted(ds.styles) == sorted(entry["styles"]) and ds.tracks_per_style() == entry["data"].get("tracks")


def real_steering(ds: PreparedDataset, clips: int = 16, target: str = "metal", net: str = "mel-free",
                  log=None) -> tuple[dict, bool] | None:
    """Sample-level against effect steering of real songs by the shipped real-music net, judged (cached).

    Only for the collection ``net`` was trained on (its styles and tracks per style), since the
    clips must come from the tracks it never heard: the test tracks of ``train``'s split with seed
    0 (:func:`thesis_lib.dream.effects.collection_clips`). The judge is the log-mel baseline
    fitted on the same training tracks. The result (``None`` for other data) holds the summary of
    :func:`~thesis_lib.dream.effects.compare_steering`, each clip's track and effect words, and
    for one clip -- the clearest one the judge was turned to ``target`` on -- the original and the
    effect-steered audio, for the players and the listening test.
    """
    from ..dream.effects import compare_steering, effect_steer

    if not _shipped_net_data(ds, net):
        return None
    quiet = log or (lambda m: None)

    def compute() -> dict:
        model, styles, judge, data, pick, x = _steering_setup(ds, net, target, clips, quiet)
        t = styles.index(target)
        summary, verdicts = compare_steering(model, styles, x, t, judge, progress=False)
        jt = judge.index(target)
        gain = [(v.judge_before != jt and v.judge_after == jt, v.judge_p_target_after - v.judge_p_target_before)
                for v in verdicts["effects"]]
        best = max(range(len(gain)), key=lambda k: gain[k])   # a clip the judge was turned on, the clearest
        e = effect_steer(model, x[best], t, judge=judge, styles=styles, progress=False)
        return {"summary": summary, "net": net, "judge": judge.name,
                "clips": [{"track": data.tracks[data.track_of[i]], "words": v.words,
                           "drive": v.params.get("drive_mix", 0.0) >= 0.05, "penalty": v.penalty,
                           "p_after": v.p_target_after,
                           "judge_agrees": v.judge_before != jt and v.judge_after == jt}
                          for i, v in zip(pick, verdicts["effects"])],
                "best": {"track": data.tracks[data.track_of[pick[best]]], "words": e.words,
                         "judge_p_before": e.judge_p_target_before, "judge_p_after": e.judge_p_target_after,
                         "sample_rate": model.cfg.sample_rate,
                         "original": np.round(e.original, 4).tolist(), "audio": np.round(e.audio, 4).tolist()}}

    return _cached("steer", _steering_key(ds, net, clips, target), compute)


def real_steering_strength(ds: PreparedDataset, penalties: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03), clips: int = 16,
                           target: str = "metal", net: str = "mel-free", log=None) -> tuple[dict, bool] | None:
    """The clips of :func:`real_steering` steered through the effects at fixed penalties, one search
    each with no relaxing toward a confidence (cached): :func:`~thesis_lib.dream.effects.steering_strength`'s
    rows; ``None`` for other data."""
    from ..dream.effects import steering_strength

    if not _shipped_net_data(ds, net):
        return None
    quiet = log or (lambda m: None)

    def compute() -> dict:
        model, styles, judge, _, _, x = _steering_setup(ds, net, target, clips, quiet)
        return {"rows": steering_strength(model, styles, x, styles.index(target), judge, tuple(penalties),
                                          progress=False), "net": net, "judge": judge.name}

    return _cached("strength", _steering_key(ds, net, clips, target, penalties=list(penalties)), compute)
