#!/usr/bin/python3
"""Trains a ResNet with efps (dist-EF-blockSGDM over a parameter server) or
with torch's DistributedDataParallel (gloo; optional fp16 or PowerSGD comm
hook), from the same script: same model, data, seed and schedule, so the
only difference between two runs is how gradients travel.

  # 4 workers on this machine, efps blocksign (starts 1 efps server too)
  examples/torch/train_resnet.py --workers 4 --dist efps --compressor blocksign \\
      --dataset fashion-mnist --model resnet18 --epochs 2 --csv run.csv
  # the same with DDP and PowerSGD rank 4
  examples/torch/train_resnet.py --workers 4 --dist ddp --ddp-hook powersgd --powersgd-rank 4 ...
  # ImageNet layout, under efps's launcher or torchrun
  python3 -m efps.run --workers 4 --servers 1 examples/torch/train_resnet.py --dist efps --data DIR
  torchrun --nproc_per_node 4 examples/torch/train_resnet.py --dist ddp --data DIR

Rank 0 prints progress (tqdm when installed and stderr is a terminal, else
a line every --log-seconds), writes one CSV row per epoch (--csv; the first
11 columns are efps-train's) and a final summary line."""
import argparse
import csv
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
_BINDINGS = os.path.join(HERE, "..", "..", "bindings", "python")
if os.path.isdir(_BINDINGS):  # run from the source tree: use its efps package
    _BINDINGS = os.path.abspath(_BINDINGS)
    sys.path.insert(1, _BINDINGS)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_BINDINGS, os.environ.get("PYTHONPATH")]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

import comm  # noqa: E402
import data  # noqa: E402
import launch  # noqa: E402
from models import build_model  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:  # Debian: python3-tqdm
    tqdm = None

CSV_FIELDS = ["epoch", "steps", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "wall_s",
              "images_per_s", "wire_bytes", "fp32_bytes", "epoch_s", "step_ms", "mode", "wire_method",
              "loopback_bytes", "skipped", "worker_residual", "server_residual", "scale_min",
              "scale_mean", "scale_max"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", default="resnet18", choices=["resnet18", "resnet50", "resnet20"])
    a("--dataset", choices=["imagefolder", "fashion-mnist", "fake"],
      help="default: imagefolder with --data, else fashion-mnist")
    a("--data", help="ImageNet-layout folder (train/ and val/), or the Fashion-MNIST folder")
    a("--image-size", type=int, default=0, help="crop size (default 224 for imagefolder, 32 otherwise)")
    a("--train-subset", type=int, default=0, help="train on the first N images only (0: all)")
    a("--test-subset", type=int, default=0, help="evaluate the first N images only (0: all)")
    a("--fake-size", type=int, default=2048, help="FakeData training images")
    a("--loader-workers", type=int, default=-1,
      help="DataLoader worker processes per rank (default: 2 for imagefolder, 0 otherwise)")
    a("--dist", default="efps", choices=["efps", "ddp"])
    a("--ddp-hook", default="none", choices=["none", "fp16", "powersgd"])
    a("--powersgd-rank", type=int, default=1)
    a("--powersgd-start", type=int, default=2, help="first PowerSGD step (torch's start_powerSGD_iter)")
    a("--compressor", default="blocksign", choices=["none", "sign", "blocksign"])
    a("--block", type=int, default=2048, help="blocksign elements per scale (0: one per tensor part)")
    a("--group-below", type=int, default=512, help="tensors below this many elements travel as one key")
    a("--apply", default="forward", choices=["forward", "step"],
      help="efps applies a parameter's update before its module's next forward, or at step()")
    a("--compress-warmup", type=int, default=0, help="efps: first K steps uncompressed")
    a("--epochs", type=int, default=1)
    a("--batch-size", type=int, default=32, help="per worker")
    a("--lr", type=float, default=0.1, help="peak learning rate (for the whole batch of all workers)")
    a("--momentum", type=float, default=0.9)
    a("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    a("--weight-decay", type=float, default=1e-4)
    a("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    a("--milestones", default="0.5,0.75", help="step schedule: fractions of training where lr x0.1")
    a("--warmup-epochs", type=float, default=0.0, help="linear lr warm-up (may be fractional)")
    a("--seed", type=int, default=1)
    a("--max-steps", type=int, default=0, help="stop after this many steps in total (smoke runs)")
    a("--threads", type=int, default=1, help="torch threads per process")
    a("--csv", help="per-epoch CSV (rank 0)")
    a("--count-loopback", action="store_true",
      help="add the loopback's transmitted bytes since training began to the CSV: everything "
      "sent between processes, when the job has a network namespace of its own")
    a("--progress", default="auto", choices=["auto", "tqdm", "line", "none"])
    a("--log-seconds", type=float, default=10.0)
    a("--workers", type=int, default=0, help="launch this many workers on this machine")
    a("--servers", type=int, default=1, help="efps servers to start with --workers")
    args = p.parse_args(argv)
    if args.dataset is None:
        args.dataset = "imagefolder" if args.data else "fashion-mnist"
    if args.loader_workers < 0:
        args.loader_workers = 2 if args.dataset == "imagefolder" else 0
    return args


def lr_factor(args, steps_per_epoch, total_steps):
    """The schedule as a function of the step, for LambdaLR (per step)."""
    warm = int(round(args.warmup_epochs * steps_per_epoch))
    miles = [int(float(f) * total_steps) for f in args.milestones.split(",") if f]

    def f(step):
        w = min(1.0, (step + 1) / warm) if warm else 1.0
        if args.schedule == "cosine":
            t = max(0, step - warm) / max(1, total_steps - warm)
            return w * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
        if args.schedule == "step":
            return w * 0.1 ** sum(step >= m for m in miles)
        return w

    return f


def allreduce_sum(backend, values):
    """Sums a list of floats over the ranks (the metrics group)."""
    t = torch.tensor(values, dtype=torch.float64)
    if backend.metrics_group is not None:
        dist.all_reduce(t, group=backend.metrics_group)
    return t.tolist()


def average_bn_buffers(backend, model):
    """BN running statistics are local to each rank during training (efps's
    default; DDP is told the same): average them before evaluating, so every
    rank evaluates the same model on its shard of the test set."""
    if backend.metrics_group is None or backend.world == 1:
        return
    for name, buf in model.named_buffers():
        if buf.dtype.is_floating_point:
            dist.all_reduce(buf, group=backend.metrics_group)
            buf.div_(backend.world)


@torch.no_grad()
def evaluate(args, backend, model, test):
    """(loss, accuracy %) over the test set, each rank taking a contiguous
    shard (rank 0 takes all of it when there is no metrics group)."""
    model.eval()
    sharded = backend.metrics_group is not None
    n = len(test)
    lo, hi = (backend.rank * n // backend.world, (backend.rank + 1) * n // backend.world) if sharded else (0, n)
    loader = DataLoader(torch.utils.data.Subset(test, range(lo, hi)), batch_size=256,
                        num_workers=args.loader_workers)
    loss = correct = count = 0.0
    if sharded or backend.rank == 0:
        for x, y in loader:
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            count += len(y)
    loss, correct, count = allreduce_sum(backend, [loss, correct, count]) if sharded else (loss, correct, count)
    model.train()
    return loss / max(count, 1), 100.0 * correct / max(count, 1)


def loopback_tx_bytes():
    """Bytes the loopback interface of this network namespace has sent."""
    with open("/proc/self/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    raise RuntimeError("no lo in /proc/self/net/dev")


def stat_columns(stats):
    """The optimizer's own figures as CSV columns (blank for DDP): skipped
    non-finite gradients, rank 0's error-feedback residual norm ||e_0||, the
    servers' ||e~||, and the blocksign scales of rank 0's last push over all
    keys (min, mean weighted by blocks, max)."""
    skipped = stats.get("skipped")
    out = {"skipped": "" if skipped is None else sum(skipped.values())}
    for k in ("worker_residual", "server_residual"):
        out[k] = f"{stats[k]:.6g}" if k in stats else ""
    keys = [k for k in stats.get("keys", {}).values() if k.get("blocks")]
    if keys:
        blocks = sum(k["blocks"] for k in keys)
        out["scale_min"] = f"{min(k['scale_min'] for k in keys):.6g}"
        out["scale_mean"] = f"{sum(k['scale_mean'] * k['blocks'] for k in keys) / blocks:.6g}"
        out["scale_max"] = f"{max(k['scale_max'] for k in keys):.6g}"
    return out


class Progress:
    def __init__(self, args, rank, total, epoch):
        self.bar = None
        self.last = time.time()
        self.args, self.total, self.epoch, self.on = args, total, epoch, rank == 0
        mode = args.progress
        if mode == "auto":
            mode = "tqdm" if tqdm is not None and sys.stderr.isatty() else "line"
        if mode == "tqdm" and tqdm is None:
            mode = "line"
        self.mode = mode if self.on else "none"
        if self.mode == "tqdm":
            self.bar = tqdm(total=total, desc=f"epoch {epoch}", unit="step", file=sys.stderr)

    def update(self, step, loss, acc, ips):
        if self.mode == "tqdm":
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.1f}", img_s=f"{ips:.0f}", refresh=False)
        elif self.mode == "line" and (time.time() - self.last >= self.args.log_seconds or step == self.total):
            self.last = time.time()
            print(f"epoch {self.epoch} step {step}/{self.total} loss {loss:.4f} acc {acc:.2f}% "
                  f"{ips:.1f} images/s", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(args):
    torch.set_num_threads(args.threads)
    train_set, test_set, channels, classes = data.load(args)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = build_model(args.model, channels, classes)
    backend = comm.create(args, model)
    rank, world = backend.rank, backend.world
    torch.manual_seed(args.seed * 1000 + rank)  # augmentation differs per rank, reproducibly
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                 drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                        num_workers=args.loader_workers, persistent_workers=args.loader_workers > 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training images give no batch of {args.batch_size} "
                         f"on each of {world} workers")
    total = args.epochs * steps_per_epoch
    if args.max_steps:
        total = min(total, args.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(backend.opt, lr_factor(args, steps_per_epoch, total))
    out = None
    if rank == 0 and args.csv:
        out = open(args.csv, "w", newline="")
        writer = csv.DictWriter(out, CSV_FIELDS)
        writer.writeheader()
    if rank == 0:
        params = sum(p.numel() for p in model.parameters())
        print(f"train_resnet: {args.model} ({params} parameters, {len(list(model.parameters()))} tensors) "
              f"on {args.dataset} ({len(train_set)} train / {len(test_set)} test), {backend.label}, "
              f"{world} workers x batch {args.batch_size}, {steps_per_epoch} steps/epoch, {total} steps",
              file=sys.stderr, flush=True)
    if backend.metrics_group is not None:
        dist.barrier(backend.metrics_group)  # every rank set up: training traffic starts here
    lo0 = loopback_tx_bytes() if args.count_loopback else None
    step, wall0, train_s, summary = 0, time.time(), 0.0, None
    for epoch in range(1, args.epochs + 1):
        if step >= total:
            break
        sampler.set_epoch(epoch)
        prog = Progress(args, rank, min(steps_per_epoch, total - step), epoch)
        t0, loss_sum, correct, seen, lr = time.time(), 0.0, 0, 0, backend.opt.param_groups[0]["lr"]
        for x, y in loader:
            lr = backend.opt.param_groups[0]["lr"]
            backend.opt.zero_grad()
            logits = backend.model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            backend.opt.step()
            sched.step()
            backend.after_step()
            step += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"rank {rank}: loss is {loss.item()} at step {step}")
            prog.update(step - (epoch - 1) * steps_per_epoch, loss_sum / seen, 100.0 * correct / seen,
                        seen * world / (time.time() - t0))
            if step >= total:
                break
        prog.close()
        epoch_s = time.time() - t0
        train_s += epoch_s
        nsteps = step - (epoch - 1) * steps_per_epoch
        tl, tc, tn, wire = allreduce_sum(backend, [loss_sum, correct, seen, backend.wire_bytes()])
        lo = "" if lo0 is None else loopback_tx_bytes() - lo0
        if backend.metrics_group is None:  # only this rank's figure: all ranks move the same
            wire *= world
        fp32 = backend.fp32_bytes() * world
        backend.before_eval()
        stats = backend.stats(rank == 0)
        average_bn_buffers(backend, model)
        test_loss, test_acc = evaluate(args, backend, backend.model, test_set)
        row = dict(epoch=epoch, steps=step, lr=f"{lr:.6g}", train_loss=f"{tl / tn:.5f}",
                   train_acc=f"{100.0 * tc / tn:.3f}", test_loss=f"{test_loss:.5f}",
                   test_acc=f"{test_acc:.3f}", wall_s=f"{time.time() - wall0:.2f}",
                   images_per_s=f"{tn / epoch_s:.2f}", wire_bytes=int(wire), fp32_bytes=int(fp32),
                   epoch_s=f"{epoch_s:.2f}", step_ms=f"{1000.0 * epoch_s / max(nsteps, 1):.2f}",
                   mode=backend.label, wire_method=backend.wire_method, loopback_bytes=lo,
                   **stat_columns(stats))
        if rank == 0:
            print(f"epoch {epoch} done: train loss {tl / tn:.4f} acc {100.0 * tc / tn:.2f}%, test loss "
                  f"{test_loss:.4f} acc {test_acc:.2f}%, {tn / epoch_s:.1f} images/s, "
                  f"{1000.0 * epoch_s / max(nsteps, 1):.1f} ms/step, wire {wire / 1e6:.1f} MB "
                  f"(fp32 {fp32 / 1e6:.1f} MB)", file=sys.stderr, flush=True)
            if out:
                writer.writerow(row)
                out.flush()
        summary = row
    backend.finish()
    if rank == 0 and summary:
        wire, fp32 = int(summary["wire_bytes"]), int(summary["fp32_bytes"])
        print(f"final: {args.model} {backend.label} workers {world} steps {step} test_acc "
              f"{summary['test_acc']}% train_s {train_s:.1f} images_per_s "
              f"{step * args.batch_size * world / train_s:.1f} step_ms {1000.0 * train_s / step:.1f} "
              f"wire_bytes {wire} ({backend.wire_method}) fp32_bytes {fp32} "
              f"fp32/wire {fp32 / wire if wire else float('inf'):.1f}", flush=True)
    if out:
        out.close()


def main(argv):
    args = parse_args(argv)
    if args.workers:
        return launch.launch(args, os.path.abspath(__file__), argv)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
