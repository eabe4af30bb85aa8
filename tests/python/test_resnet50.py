"""The ResNet-50 path of examples/torch/train_resnet.py: torchvision's
resnet50 (25.6 M parameters in 161 tensors) through efps blocksign over 2
workers on FakeData at 64 px, 2 steps. A smoke test: it finishes, the loss is
finite, and the bytes are those of blocksign (grouped keys, blocks of 2048)."""
import math

from test_example import run

RESNET50_PARAMS = 23528522  # torchvision resnet50(num_classes=10), 3 channels


def test_resnet50_fake_two_steps(tmp_path):
    p, rows = run(tmp_path, "--workers", 2, "--dist", "efps", "--compressor", "blocksign",
                  "--block", 2048, "--model", "resnet50", "--dataset", "fake", "--image-size", 64,
                  "--fake-size", 16, "--batch-size", 4, "--max-steps", 2, timeout=600)
    assert len(rows) == 1 and int(rows[0]["steps"]) == 2, rows
    assert math.isfinite(float(rows[0]["train_loss"]))
    fp32 = 2 * 2 * 2 * 4 * RESNET50_PARAMS  # steps x workers x (push + pull) x 4 bytes
    assert int(rows[0]["fp32_bytes"]) == fp32, rows[0]
    wire = int(rows[0]["wire_bytes"])
    # blocksign: a sign bit per element and a 4-byte scale per 2048, plus
    # headers and padding: between 1/32 and 1/25 of fp32
    assert fp32 / 32 < wire < fp32 / 25, (wire, fp32)
    assert "final: resnet50 efps-blocksign workers 2 steps 2" in p.stdout
