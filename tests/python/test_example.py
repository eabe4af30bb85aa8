"""examples/torch/train_resnet.py end to end: the ImageNet-layout path on a
tiny generated ImageFolder with efps, the bytes efps and DDP report, and the
launcher's failure report. Each runs the script as a user would
(--workers N launches the job on this machine)."""
import csv
import math
import os
import subprocess
import sys

import pytest
from PIL import Image
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(REPO, "examples", "torch", "train_resnet.py")
RESNET20_PARAMS = 272474  # models.ResNetCifar(3, 3, 10) (checked below)
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def env():
    e = dict(os.environ)
    for v in ("RANK", "WORLD_SIZE", "EFPS_RANK", "EFPS_NUM_WORKERS", "EFPS_SERVERS", "EFPS_COMPRESSOR",
              "EFPS_BLOCK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(v, None)
    e.setdefault("EFPS_TIMEOUT_MS", "60000")
    return e


def run(tmp, *args, timeout=420):
    """train_resnet.py with args; returns (CompletedProcess, CSV rows)."""
    out = os.path.join(str(tmp), "run.csv")
    cmd = [sys.executable, SCRIPT, "--progress", "none", "--csv", out] + [str(a) for a in args]
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}"
    with open(out) as f:
        return p, list(csv.DictReader(f))


def make_imagefolder(root, train_per_class, val_per_class):
    """root/{train,val}/<colour>/: noisy images of one colour per class,
    alternately PNG and JPEG, of varied sizes (the pipeline resizes)."""
    rng = np.random.default_rng(7)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for name, rgb in COLOURS.items():
            d = os.path.join(root, split, name)
            os.makedirs(d)
            for i in range(n):
                h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
                px = np.clip(np.array(rgb) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(px).save(os.path.join(d, f"{i}.{ext}"))


def test_imagefolder_trains_with_efps_blocksign(tmp_path):
    make_imagefolder(str(tmp_path / "data"), 24, 8)
    p, rows = run(tmp_path, "--workers", 2, "--dist", "efps", "--compressor", "blocksign",
                  "--data", tmp_path / "data", "--model", "resnet20", "--image-size", 32,
                  "--batch-size", 6, "--epochs", 3, "--lr", 0.05, "--loader-workers", 1)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["steps"]) for r in rows] == [6, 12, 18]  # 72 images / 2 workers / batch 6
    losses = [float(r["train_loss"]) for r in rows]
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], f"training loss did not fall: {losses}"
    assert float(rows[-1]["test_acc"]) > 60.0, rows[-1]  # 3 classes told apart by colour
    wire = [int(r["wire_bytes"]) for r in rows]
    assert 0 < wire[0] < wire[1] < wire[2]
    assert rows[-1]["mode"] == "efps-blocksign" and rows[-1]["wire_method"] == "counted"
    assert "final: resnet20 efps-blocksign workers 2 steps 18" in p.stdout
    # what efps exposes beyond bytes: residual norms on worker and servers, scales
    for r in rows:
        for k in ("worker_residual", "server_residual", "scale_min", "scale_mean", "scale_max"):
            assert math.isfinite(float(r[k])) and float(r[k]) > 0, (k, r)
        assert float(r["scale_min"]) <= float(r["scale_mean"]) <= float(r["scale_max"])
        assert int(r["skipped"]) == 0


def test_blocksign_moves_25x_fewer_bytes_than_none(tmp_path):
    common = ["--workers", 2, "--dist", "efps", "--dataset", "fake", "--fake-size", 64,
              "--model", "resnet20", "--batch-size", 8, "--max-steps", 3]
    _, none = run(tmp_path, *common, "--compressor", "none")
    _, bs = run(tmp_path, *common, "--compressor", "blocksign")
    wire_none, wire_bs = int(none[-1]["wire_bytes"]), int(bs[-1]["wire_bytes"])
    # none sends every element in fp32 each way: at least the fp32 bytes
    fp32 = 3 * 2 * 2 * 4 * RESNET20_PARAMS  # steps x workers x (push + pull) x 4 bytes
    assert int(none[-1]["fp32_bytes"]) == fp32 == int(bs[-1]["fp32_bytes"])
    assert wire_none >= fp32
    assert 0 < wire_bs * 25 < wire_none, (wire_bs, wire_none)


@pytest.mark.parametrize("hook,factor", [("none", 1.0), ("fp16", 0.5)])
def test_ddp_fake_smoke_counts_ring_bytes(tmp_path, hook, factor):
    p, rows = run(tmp_path, "--workers", 2, "--dist", "ddp", "--ddp-hook", hook, "--dataset", "fake",
                  "--fake-size", 64, "--model", "resnet20", "--batch-size", 8, "--max-steps", 3)
    assert len(rows) == 1 and int(rows[0]["steps"]) == 3
    assert math.isfinite(float(rows[0]["train_loss"]))
    # gloo's ring all-reduce: each of M = 2 ranks sends 2(M-1)/M = 1 x the
    # gradient bytes per step; 3 steps, 2 ranks
    fp32 = 3 * 2 * 4 * RESNET20_PARAMS
    assert int(rows[0]["fp32_bytes"]) == fp32
    assert int(rows[0]["wire_bytes"]) == int(fp32 * factor)
    assert "job cpu_s" in p.stdout


def test_resnet20_parameter_count():
    sys.path.insert(0, os.path.join(REPO, "examples", "torch"))
    from models import build_model
    assert sum(p.numel() for p in build_model("resnet20", 3, 10).parameters()) == RESNET20_PARAMS
    # 1-channel stem: the first convolution has one input channel
    assert build_model("resnet18", 1, 10).conv1.weight.shape[1] == 1


def test_launcher_names_the_failed_worker(tmp_path):
    cmd = [sys.executable, SCRIPT, "--workers", "2", "--dist", "ddp", "--data", str(tmp_path / "nowhere")]
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "no train/ folder" in p.stderr
    assert "train_resnet: worker" in p.stderr and "failed" in p.stderr
