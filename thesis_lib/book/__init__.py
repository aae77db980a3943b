"""The book's wing: what the chapters share, the precomputed controls, the build.

Modules, one idea each:

* :mod:`~thesis_lib.book.runs` -- the built-in data and trained nets, cached (:func:`trained_model`),
  or the reader's own music and net (:func:`reader_run`);
* :mod:`~thesis_lib.book.display` -- audio players, HTML pieces, Markdown tables, embedded figures;
* :mod:`~thesis_lib.book.figures` -- the chapters' figures and tables of the network;
* :mod:`~thesis_lib.book.realmusic` -- chapter 4b's real music: cross-validation (cached), wrong tracks, the leak;
* :mod:`~thesis_lib.book.timing` -- chapter 8's micro-benchmarks;
* :mod:`~thesis_lib.book.widgets` -- controls that work in the static book and in a kernel;
* :mod:`~thesis_lib.book.build` -- executes the chapters and builds the HTML
  (``python -m thesis_lib book``);
* :mod:`~thesis_lib.book.sphinxext` -- the Sphinx extension of ``_config.yml``.

The wing imports the core and the dreaming wing, never the other way round.
The names of ``runs``, ``display``, ``figures`` and ``timing`` are re-exported
here (imported on first use): ``from thesis_lib import book; book.trained_model()``.
"""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "references": ("make_references", "references", "reference_audio", "reference_players"),
    "runs": ("SMALL_SPEC", "SMALL_EPOCHS", "SMALL_BATCH", "synth_spec", "train_settings", "dataset", "BookRun",
             "RESULT_SETTINGS", "run_key", "trained_model", "finished_runs", "clips_per_track", "leakage",
             "track_path", "PRETRAINED", "pretrained_run", "run_origin", "shipped_net_for", "test_set_of",
             "clips_of", "reader_run", "reader_data", "reader_settings", "READER_NOTE"),
    "display": ("STATIC_ENV", "in_colab", "static_build", "HTML", "audio_html", "player", "players",
                "markdown_table", "figure_html", "signal_panel"),
    "figures": ("RESPONSE_FFT", "network_table", "filter_stats", "dc_gain_db", "weight_change", "filter_limit",
                "plot_filters", "plot_preparation", "plot_responses"),
    "timing": ("exp_timing", "epoch_timing", "epoch_timings", "H100_SECONDS_PER_EPOCH"),
    "widgets": (), "build": (), "sphinxext": (), "realmusic": (),
})
