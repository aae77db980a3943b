"""The benchmark runs end to end on tiny sizes and writes every figure it promises."""

import json

from thesis_lib.bench import BenchSizes, forward_flops, run_bench, training_flops
from thesis_lib.cli import main
from thesis_lib.config import THESIS

TINY = BenchSizes(clips=4, batch=2, epochs=2, warmup_steps=1, infer_batches=(1, 2), infer_clips=2,
                  matmul_n=64, prep_tracks=2, prep_seconds=66.0, music_seconds=10.0, memory_minutes=(1.2,))


def test_flop_count_follows_the_layer_shapes():
    f = forward_flops(THESIS)
    assert f["conv1"] == 2 * 8 * 19997 * 1 * 8
    assert f["conv2"] == 2 * 8 * 4992 * 8 * 32
    assert f["conv3"] == 2 * 8 * 1217 * 8 * 128
    assert f["fc"] == 2 * 8 * 1217 * 256 and f["out"] == 2 * 256 * 2
    assert training_flops(THESIS, 480) == 3 * 480 * sum(f.values())
    assert 60e9 < training_flops(THESIS, 480) < 75e9     # about 69 GFLOP per thesis step


def test_preparation_gives_every_core_two_tracks():
    from thesis_lib.bench import BenchSizes, preparation_tracks

    assert [preparation_tracks(BenchSizes(), c) for c in (1, 2, 16)] == [4, 4, 32]
    assert preparation_tracks(BenchSizes(prep_tracks=3), 16) == 3


def test_bench_writes_every_key(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    lines = []
    run_bench(out, quick=True, sizes=TINY, log=lines.append, isolate=False)   # `make bench` isolates each part
    b = json.loads(out.read_text())
    for key in ("device", "threads", "torch", "cpu_count", "load_average", "load_average_after"):
        assert key in b["machine"], key
    assert b["matmul_fp32"]["gflops_best"] > 0
    assert b["flops"]["training_step"] == training_flops(THESIS, 2)
    # a CPU: bf16 products timed beside fp32, each also with its batch norms uncompiled (short runs)
    for impl in ("reference", "fast", "fast-bf16", "fast-fp32-eager", "fast-bf16-eager"):
        r = b["training"][impl]
        assert len(r["epoch_seconds"]) == 2 and r["seconds_per_epoch"] > 0
        assert r["gflops"] > 0 and 0 < r["fraction_of_peak"] and r["peak_rss_mb"] > 50
    # beside each peak, what train's memory check expects of that path at the bench's batch
    from thesis_lib.train import training_memory

    eager = training_memory(2, "fast", "bf16", compiled=False) / 2 ** 20
    assert b["training"]["fast-bf16-eager"]["memory_check_mb"] == eager
    assert b["training"]["reference"]["memory_check_mb"] == training_memory(2, "reference", "fp32") / 2 ** 20
    assert any("memory check expects" in line for line in lines)
    assert b["training"]["speedup"] > 0 and b["training"]["thesis_titan_x_seconds_per_epoch"] == 11.39
    from thesis_lib.fast import resolve_precision

    assert b["training"]["default"] == "fast"                     # what train runs here, and how
    assert b["training"]["default_precision"] == resolve_precision("auto", "fast", "cpu")
    assert b["training"]["default_compiled_for_thesis_run"] is True   # 96,000 clips pay on a CPU
    assert set(b["inference"]["clips_per_second"]) == set(b["inference"]["clips_per_second_plain"]) == {"1", "2"}
    assert b["inference"]["music_seconds_per_second"] > 0
    p = b["preparation"]
    assert p["tracks"] == 2 and p["clips"] == 2 and p["music_seconds_per_second"] > 0
    assert p["music_seconds"] == 132.0
    [m] = b["memory_vs_length"]
    assert m["minutes"] == 1.2 and m["clips"] == 2 and m["peak_rss_mb"] > 0 and m["music_seconds_per_second"] > 0
    for key in ("training_reference", "training_fast", "preparation", "preparation_workers", "inference"):
        assert b["peak_rss_mb"][key] > 0, key
    assert any("s/epoch" in line for line in lines) and any("GFLOP/s" in line for line in lines)
    # the command line passes its options through (without measuring a second time)
    seen = {}
    monkeypatch.setattr("thesis_lib.bench.run_bench", lambda out, **kw: seen.update(out=out, **kw))
    assert main(["bench", "--quick", "--out", str(tmp_path / "cli.json"), "--epochs", "5"]) == 0
    assert seen == {"out": tmp_path / "cli.json", "quick": True, "device": "auto", "epochs": 5,
                    "parts": ("training", "inference", "preparation", "memory")}
    assert main(["bench", "--quick", "--out", str(tmp_path / "cli.json"), "--parts", "training, preparation"]) == 0
    assert seen["parts"] == ("training", "preparation")


def test_bench_measures_only_the_parts_asked_for(tmp_path, capsys):
    out = tmp_path / "bench.json"
    run_bench(out, quick=True, sizes=TINY, log=lambda line: None, isolate=False, parts=("preparation",))
    b = json.loads(out.read_text())
    assert b["parts"] == ["preparation"] and b["preparation"]["tracks"] == 2
    assert not {"training", "inference", "memory_vs_length"} & set(b)
    assert set(b["peak_rss_mb"]) == {"preparation", "preparation_workers"}
    assert main(["bench", "--quick", "--out", str(out), "--parts", "training,speed"]) == 1
    assert "speed" in capsys.readouterr().err
