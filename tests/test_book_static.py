"""The book's sources: clean notebooks, a consistent table of contents, config and citations."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from thesis_lib.book import build as bookbuild

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def test_there_are_nine_chapters_and_the_toc_lists_exactly_them():
    assert len(NOTEBOOKS) == 9
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = [toc["root"]] + [c["file"] for c in toc["chapters"]]
    for f in listed:
        assert (ROOT / f"{f}.ipynb").is_file() or (ROOT / f"{f}.md").is_file(), f
    assert sorted(f"{f}.ipynb" for f in listed if (ROOT / f"{f}.ipynb").is_file()) == \
        sorted(str(p.relative_to(ROOT)) for p in NOTEBOOKS)
    assert [p.name for p in bookbuild.chapters(ROOT)] == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_no_outputs_and_starts_with_install_then_parameters(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "code" and "'google.colab' in sys.modules".replace("'", '"') in first.source
    url = CONFIG["repository"]["url"]
    pin = re.search(r"git\+(\S+?)@(v[\d.]+|[0-9a-f]{40})\"", first.source)
    assert pin, "the install cell must pin a tag or a commit"
    assert pin.group(1) == url, "the install cell and _config.yml must name the same repository"
    assert second.cell_type == "code" and "parameters" in second.metadata.get("tags", [])
    names = bookbuild.parameter_names(path)
    assert names, "the parameters cell assigns nothing"
    # Every parameter is a plain literal, so papermill can override it.
    for node in ast.parse(second.source).body:
        ast.literal_eval(node.value)
    assert nb.metadata.get("accelerator") == "GPU"  # Colab opens it with a GPU runtime


def test_every_chapter_except_the_network_has_the_small_switch():
    for path in NOTEBOOKS:
        if path.stem != "03_network":
            assert "SMALL" in bookbuild.parameter_names(path), path.name


def test_every_citation_is_in_the_bibliography_and_the_thesis_is_cited_everywhere():
    bib = (ROOT / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert {"geng2016", "dieleman2014", "vandenoord2013", "mordvintsev2015", "mahendran2015", "gatys2015",
            "ulyanov2016", "li2010", "humphrey2012", "schlueter2013"} <= keys
    used = set()
    for path in NOTEBOOKS:
        text = "".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        cited = {k.strip() for group in re.findall(r"\{cite\}`([^`]+)`", text) for k in group.split(",")}
        assert "geng2016" in cited, path.name
        used |= cited
    assert used <= keys, used - keys
    assert keys <= used, f"references never cited: {keys - used}"


def test_config_fails_on_errors_and_has_launch_buttons():
    ex = CONFIG["execute"]
    assert ex["raise_on_error"] is True and ex["execute_notebooks"] in ("force", "cache", "auto")
    assert ex["timeout"] >= 1800
    assert CONFIG["repository"]["url"].startswith("https://github.com/")
    assert CONFIG["repository"]["branch"] and "path_to_book" in CONFIG["repository"]
    assert CONFIG["launch_buttons"]["binderhub_url"].startswith("https://")
    assert CONFIG["launch_buttons"]["colab_url"].startswith("https://colab")
    assert "references.bib" in CONFIG["bibtex_bibfiles"]


def test_binder_environment_is_cpu_torch_with_audio_libraries():
    req = (ROOT / "binder" / "requirements.txt").read_text()
    assert re.search(r"^torch==[\d.]+\+cpu$", req, re.M) and "download.pytorch.org/whl/cpu" in req
    assert "-e ." in req.splitlines()
    assert set((ROOT / "binder" / "apt.txt").read_text().split()) == {"libsndfile1", "ffmpeg"}
    assert re.fullmatch(r"python-3\.\d+\s*", (ROOT / "binder" / "runtime.txt").read_text())


def test_copied_sources_switch_execution_off(tmp_path):
    bookbuild.copy_sources(tmp_path / "src", ROOT)
    cfg = yaml.safe_load((tmp_path / "src" / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off" and cfg["execute"]["raise_on_error"] is True
    assert len(list((tmp_path / "src" / "book").glob("*.ipynb"))) == len(NOTEBOOKS)



def _notebook(path: Path, code: str, alone: bool = False) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if alone:
        nb.metadata["thesis_lib"] = {"run_alone": True}
    nbformat.write(nb, path)
    return path


def test_chapters_run_two_at_a_time_with_a_share_of_the_cores_and_timers_alone(tmp_path):
    import json
    import os

    def stamping(name: str) -> str:   # the chapter writes when it ran and the threads it was given
        return (f"import os, time, json\nt0 = time.time(); time.sleep(1.5)\n"
                f"open({str(tmp_path / (name + '.json'))!r}, 'w').write("
                f"json.dumps([t0, time.time(), os.environ.get('OMP_NUM_THREADS')]))")

    nbs = [_notebook(tmp_path / f"{n}.ipynb", stamping(n), alone=n == "timer") for n in ("a", "b", "timer")]
    seconds = bookbuild.execute_all(nbs, {}, jobs=2, log=lambda m: None)
    assert list(seconds) == ["a", "b", "timer"] and all(s > 1.5 for s in seconds.values())
    (a0, a1, a_threads), (b0, b1, b_threads), (t0, _, t_threads) = (
        json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b", "timer"))
    assert a0 < b1 and b0 < a1                     # a and b ran at the same time
    assert t0 > max(a1, b1)                        # the timing chapter after both, alone
    assert a_threads == b_threads == str(max(1, (os.cpu_count() or 1) // 2))
    assert t_threads == os.environ.get("OMP_NUM_THREADS")   # every core: the build's own setting


def test_a_kernel_that_dies_while_starting_is_started_again(tmp_path, monkeypatch):
    """Two kernels started at once can race for a TCP port (papermill#511): the loser dies before its
    first reply, no cell run. Its chapter starts again; any other error is the chapter's own."""
    import papermill

    nb = _notebook(tmp_path / "a.ipynb", "x = 1")
    calls, lines = [], []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) < bookbuild.KERNEL_STARTS:
            raise RuntimeError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    bookbuild.execute(nb, {}, log=lines.append)
    assert len(calls) == bookbuild.KERNEL_STARTS and sum("starting it again" in line for line in lines) == 2
    for message, tries in (("Kernel died before replying to kernel_info", bookbuild.KERNEL_STARTS),
                           ("a cell failed", 1)):       # dies every time: raised after the last try
        def failing(*args, message=message, **kwargs):
            calls.append(args)
            raise RuntimeError(message)

        calls.clear()
        monkeypatch.setattr(papermill, "execute_notebook", failing)
        with pytest.raises(RuntimeError, match=message):
            bookbuild.execute(nb, {}, log=lines.append)
        assert len(calls) == tries


def test_a_failing_chapter_stops_the_build_with_its_name(tmp_path):
    ok = _notebook(tmp_path / "fine.ipynb", "x = 1")
    bad = _notebook(tmp_path / "broken.ipynb", "raise ValueError('no such style: polka')")
    with pytest.raises(RuntimeError, match="(?s)broken.ipynb failed: .*ValueError: no such style: polka"):
        bookbuild.execute_all([ok, bad], {}, jobs=2, log=lambda m: None)
