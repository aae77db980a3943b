"""Execute the book's chapters with papermill, then build the HTML with Jupyter Book.

``python -m thesis_lib book --small --out _build/ci`` is what the tests run:
every chapter with small parameters (``SMALL=True``), then ``jupyter-book build``
with warnings as errors on the executed copies, without executing them again.

``python -m thesis_lib book --full --out _build`` is ``make book``: the main
job (the thesis's training run on the built-in data, also written to
``runs/reproduce``), then every chapter with its default, full parameters.

Either way the sources (the chapters, and the library beside them so that a
chapter's ``{literalinclude} ../thesis_lib/...`` resolves) are copied to
``OUT/src`` (the repository's notebooks stay without outputs), each chapter's run time goes to ``OUT/timings.json`` and
the HTML to ``OUT/html``. A failing cell stops the build with its error.

Chapters run two at a time on a machine with at least two cores (``--jobs``), each
kernel with its share of the cores as torch threads: most of a chapter's time is
its kernel starting, imports and single-threaded Python, so the book executes in
about half the time. A chapter that times the machine, or that computes for long
where its results are not cached yet, says so in its metadata
(``"thesis_lib": {"run_alone": true}``: chapter 8, and chapter 4b, whose first full
run cross-validates five models and steers real clips) and runs afterwards, alone,
with every core: in the pool it would get one core's share of threads for its whole
run while the other core idles once the short chapters are done. Chapters share what
they compute through the file-locked cache (:mod:`thesis_lib.book.runs`), so two that
need the same run compute it once.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .display import STATIC_ENV

ROOT = Path(__file__).resolve().parents[2]
"""The repository: ``_toc.yml``, ``_config.yml``, ``book/`` and ``thesis_lib/``."""
SMALL_PARAMETERS = {"SMALL": True}
"""What CI injects into every chapter that has the parameter (each chapter's own SMALL sizes apply)."""


def chapters(root: Path = ROOT) -> list[Path]:
    """The notebooks of ``_toc.yml``, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for c in toc.get("chapters", [])]
    return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").is_file()]


def parameter_names(nb_path: Path) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return {t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
    return set()


def copy_sources(src: Path, root: Path = ROOT) -> None:
    """Copy what Jupyter Book reads into ``src``, with execution switched off in its config."""
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    shutil.copytree(root / "book", src / "book", ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    # the chapters include the library's own source ({literalinclude} ../thesis_lib/...)
    shutil.copytree(root / "thesis_lib", src / "thesis_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(root / "_toc.yml", src / "_toc.yml")
    shutil.copy2(root / "references.bib", src / "references.bib")
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    cfg.setdefault("execute", {})["execute_notebooks"] = "off"  # executed here by papermill
    (src / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def runs_alone(nb: Path) -> bool:
    """Whether a chapter asks to run alone (it times the machine, or computes for long with every core
    when its results are not cached): ``metadata.thesis_lib.run_alone``."""
    meta = json.loads(nb.read_text()).get("metadata", {})
    return bool(meta.get("thesis_lib", {}).get("run_alone"))


def default_jobs() -> int:
    """Chapters executed at once: two where there are at least two cores, else one."""
    return min(2, os.cpu_count() or 1)


def _worker_threads(threads: int) -> None:
    # a kernel started from this worker inherits these: torch, OpenMP and MKL use `threads` threads
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def _execute_quietly(nb: Path, parameters: dict, timeout: int | None) -> tuple[float, str | None]:
    """:func:`execute` in a worker process: the seconds, or the error as text (exceptions of
    papermill do not always survive pickling)."""
    try:
        return execute(nb, parameters, timeout, log=lambda msg: None), None
    except Exception as exc:   # noqa: BLE001 - reported by the parent with the chapter's name
        return 0.0, f"{type(exc).__name__}: {exc}"


def execute_all(nbs: list[Path], parameters: dict, timeout: int | None = None, jobs: int | None = None,
                log=print) -> dict[str, float]:
    """Execute ``nbs`` (``jobs`` at a time, then those that run alone); ``{chapter: seconds}`` in ``nbs``' order.

    The first failing chapter stops the build: its error is raised as a :class:`RuntimeError`
    naming the chapter, and chapters not yet started are cancelled.
    """
    jobs = max(1, jobs or default_jobs())
    alone = [nb for nb in nbs if runs_alone(nb)]
    together = [nb for nb in nbs if nb not in alone]
    seconds: dict[str, float] = {}
    if jobs > 1 and len(together) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // jobs)
        log(f"executing {len(together)} chapters {jobs} at a time ({threads} thread(s) each)"
            + (f", then {', '.join(nb.stem for nb in alone)} alone" if alone else ""))
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_threads, initargs=(threads,)) as pool:
            futures = {pool.submit(_execute_quietly, nb, parameters, timeout): nb for nb in together}
            for future in as_completed(futures):
                nb = futures[future]
                took, error = future.result()
                if error:
                    pool.shutdown(cancel_futures=True)
                    raise RuntimeError(f"chapter {nb.name} failed: {error}")
                seconds[nb.stem] = took
                log(f"  {nb.name}: {took:.1f} s")
    else:
        alone = nbs
    for nb in alone:
        seconds[nb.stem] = execute(nb, parameters, timeout, log)
    return {nb.stem: round(seconds[nb.stem], 1) for nb in nbs}


KERNEL_STARTS = 3
"""Attempts at starting a chapter's kernel. Kernels started at once by separate processes can pick
the same free TCP port (jupyter_client chooses the ports, releases them, then the kernel binds:
papermill#511); the loser dies before its first reply, seen once in CI with chapters two at a time.
No cell has run then, so starting again is safe."""


def execute(nb: Path, parameters: dict, timeout: int | None = None, log=print) -> float:
    """Run one notebook in place with papermill; returns the seconds it took."""
    import papermill as pm

    names = parameter_names(nb)
    params = {k: v for k, v in parameters.items() if k in names}
    t0 = time.perf_counter()
    for attempt in range(1, KERNEL_STARTS + 1):
        try:
            pm.execute_notebook(str(nb), str(nb), parameters=params, kernel_name="python3", cwd=str(nb.parent),
                                progress_bar=False, log_output=False, execution_timeout=timeout)
            break
        except RuntimeError as exc:
            if "before replying to kernel_info" not in str(exc) or attempt == KERNEL_STARTS:
                raise
            log(f"  {nb.name}: its kernel died while starting ({exc}); starting it again")
    seconds = time.perf_counter() - t0
    hide_parameters(nb)
    log(f"  {nb.name}: {seconds:.1f} s {params or ''}")
    return seconds


HIDDEN_TAGS = ("parameters", "injected-parameters")
"""Cells the pages never show: the parameters and what papermill injected (the notebooks keep them)."""


def hide_parameters(nb_path: Path) -> None:
    """Tag the parameters cell and papermill's injected one ``remove-cell``, so no page opens with code above its title."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if any(t in tags for t in HIDDEN_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
            changed = True
    if changed:
        nbformat.write(nb, nb_path)


def build_html(src: Path, out: Path) -> Path:
    """``jupyter-book build`` with warnings as errors; the HTML lands in ``out/html``."""
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if jb is None:
        raise RuntimeError("jupyter-book not found; install the book extras (pip install -r requirements-dev.txt)")
    cmd = [jb, "build", str(src), "--path-output", str(out), "--warningiserror", "--keep-going", "--all", "-q"]
    subprocess.run(cmd, check=True)
    html = out / "_build" / "html"
    final = out / "html"
    if final.exists():
        shutil.rmtree(final)
    shutil.move(str(html), str(final))
    return final


def main_job(log=print) -> None:
    """The thesis's experiment on the built-in data (both splits), copied to ``runs/reproduce``."""
    from . import runs as book

    t0 = time.perf_counter()
    run = book.trained_model(False, log=log, progress=False, pretrained=False)
    log(f"main job: {'reused' if run.reused else 'trained'} {run.path} in {time.perf_counter() - t0:.0f} s")
    dest = ROOT / "runs" / "reproduce"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(run.path, dest)
    t0 = time.perf_counter()
    leaky = book.trained_model(False, split="clip", log=log, progress=False, pretrained=False)
    log(f"main job, split by clip: {'reused' if leaky.reused else 'trained'} {leaky.path} "
        f"in {time.perf_counter() - t0:.0f} s")


def build(out: Path, small: bool, only: list[str] | None = None, html: bool = True,
          parameters: dict | None = None, timeout: int | None = None, log=print,
          jobs: int | None = None) -> dict:
    """Copy, execute (papermill, ``jobs`` chapters at a time) and build; returns ``{chapter: seconds}``
    (also in timings.json)."""
    out = Path(out).resolve()
    src = out / "src"
    copy_sources(src)
    os.environ[STATIC_ENV] = "1"  # kernels inherit it: precomputed widgets, no live ones
    params = {**(SMALL_PARAMETERS if small else {}), **(parameters or {})}
    t_all = time.perf_counter()
    todo = [nb for nb in chapters(src) if not only or any(nb.stem.startswith(o) for o in only)]
    timings = execute_all(todo, params, timeout, jobs, log)
    log(f"executed {len(timings)} chapters in {time.perf_counter() - t_all:.0f} s")
    if html:
        t0 = time.perf_counter()
        build_html(src, out)
        timings["jupyter-book build"] = round(time.perf_counter() - t0, 1)
        log(f"built {out / 'html'} in {timings['jupyter-book build']:.0f} s")
    (out / "timings.json").write_text(json.dumps({"small": small, "parameters": params, "seconds": timings}, indent=1))
    return timings


DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m thesis_lib book`` (and ``python -m thesis_lib.book.build``)."""
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--small", action="store_true", help="small parameters (SMALL=True): what CI runs")
    mode.add_argument("--full", action="store_true", help="the thesis's parameters; runs the main job first (default)")
    p.add_argument("--out", type=Path, default=ROOT / "_build", help="build folder (default _build)")
    p.add_argument("--only", nargs="*", help="chapter name prefixes to execute, e.g. 02 03")
    p.add_argument("--no-html", action="store_true", help="execute only, do not run jupyter-book")
    p.add_argument("--no-main-job", action="store_true",
                   help="with full parameters: skip the main job (chapters then train what they miss)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra parameter for every chapter that has it (Python literal)")
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: none)")
    p.add_argument("--jobs", type=int, default=None,
                   help="chapters executed at once (default: 2 with at least two cores, else 1); "
                        "chapters that time the machine always run alone")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``book`` with the main CLI (:mod:`thesis_lib.cli`)."""
    p = sub.add_parser("book", help="execute the chapters and build the HTML book", description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(handler=run)


def run(a: argparse.Namespace) -> int:
    """Build as the parsed options say."""
    extra = {}
    for item in a.param:
        k, _, v = item.partition("=")
        extra[k] = ast.literal_eval(v)
    if not a.small and not a.no_main_job:
        main_job()
    build(a.out, a.small, a.only, not a.no_html, extra, a.timeout, jobs=a.jobs)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thesis_lib.book.build", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
