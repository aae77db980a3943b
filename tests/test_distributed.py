"""Two CPU processes with gloo: ``torchrun ... -m thesis_lib train`` works unchanged."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from thesis_lib import distributed
from thesis_lib.checkpoint import load_model, read_checkpoint
from thesis_lib.data import PreparedDataset, label_of, split_dataset
from thesis_lib.train import evaluate


def test_shard_is_a_distributed_sampler_split():
    order = np.arange(10)[::-1].copy()
    parts = [distributed.shard(order, distributed.DistInfo(r, 3, r)) for r in range(3)]
    assert all(len(p) == 4 for p in parts)                       # padded to 12
    assert sorted(np.concatenate(parts).tolist()) == sorted(order.tolist() + order[:2].tolist())
    assert parts[0].tolist() == [9, 6, 3, 0]
    assert distributed.shard(order, distributed.DistInfo()) is order
    assert distributed.local_batch(480, distributed.DistInfo(0, 4, 0)) == 120


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo not available")
def test_torchrun_two_cpu_processes_train_and_checkpoint_loads(toy_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "THESIS_LIB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "thesis_lib", "train", "--data", str(toy_data), "--out", str(out), "--epochs", "6",
           "--batch-size", "4", "--train-per-style", "6", "--test-per-style", "2", "--split", "clip",
           "--device", "cpu", "--quiet", "--model", "thesis", "--recipe", "thesis"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("model: ") == 1                     # only rank 0 reports
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["n_train"] == 12
    losses = [e["train_loss"] for e in m["epochs"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    # the files load in a single, non-distributed process and the model works
    model, styles, _ = load_model(out / "model.pt")
    ckpt = read_checkpoint(out / "checkpoint.pt")
    assert len(ckpt["history"]) == 6 and ckpt["settings"]["batch_size"] == 4
    ds = PreparedDataset.load(ckpt["data"])
    sp = split_dataset(ds, 6, 2, split="clip", seed=0)
    result = evaluate(model, ds, sp.test, label_of(ds, sp.test, sp), styles)
    assert result["test_accuracy"] == pytest.approx(m["test_accuracy"])
    assert not list(out.glob(".*tmp"))           # only rank 0 wrote, atomically
