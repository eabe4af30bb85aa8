#!/usr/bin/python3
"""Cost model of one training step on a cluster, for efps' parameter server
(none / blocksign / sign) and for the peers' ring all-reduce (fp32, fp16) and
PowerSGD. Python 3 standard library only.

  model.py keys --model resnet20                     the keys, their bytes, their server
  model.py predict --calib calib.json --model resnet8 --workers 4 --rate 10mbit --compressor none
  model.py validate --calib calib.json RUN_DIR...    predicted against measured (cluster.sh --out dirs)

What it models (one step, steady state, every worker alike):
- the model's tensors in forward order (the ResNet-(6n+2) of efps-train),
  each with a share of the step's compute in proportion to its layer's work
  (convolution and linear multiply-adds, plus batch norm and ReLU as
  memory passes); forward is a third of the step, backward two thirds;
- efps-train's keys: tensors under --group-below elements share one key,
  pushed when its last gradient is final and pulled when forward first needs
  a member; parts placed on the least loaded server in key order (as
  lib/ps/layout.c); bytes per message from the packed formats plus the
  24-byte trailer and the tcp transport's 40-byte frame header;
- the worker's thread: forward and backward of each layer, the encoding of
  each push (efps_ps_push is synchronous), the decoding of each pull, one
  after the other;
- links: every host has one link of --rate each way, carrying TCP payload at
  1448/1514 of the rate (the measured bulk goodput is 0.956); a push of a part
  occupies its worker's uplink for b/R and its server's ingress for M*b/R
  (the M workers' copies arrive together); the server reduces when all M are
  in (its kernel throughput), then sends M updates through its egress;
  "half" duplex makes a server's ingress and egress one resource (pushes and
  pulls of one server alternate), "full" lets them overlap;
- ring all-reduce: DDP's 25 MB buckets in backward order, each taking
  2(M-1)/M * bytes / R + 2(M-1) latencies, one at a time; PowerSGD (rank r):
  P and Q of every matrix through the same ring, vectors uncompressed, plus
  its matrix products at the worker's measured multiply-add rate.
The step time is the time between two forward starts after a few steps.
"""
import argparse
import csv
import json
import math
import os
import sys

TCP_EFFICIENCY = 1448.0 / 1514.0  # payload per full frame with timestamps
FRAME_HEADER = 40  # tcp transport frame header per message
TRAILER = 24  # efps message header, after the payload
ALIGN = 64


def align(x, a=ALIGN):
    return (x + a - 1) // a * a


# ---- the networks --------------------------------------------------------------


def resnet_tensors(depth, width=16, hw=28, cin=1, classes=10, batch=64):
    """efps-train's ResNet-(6n+2) (pad shortcuts): [(name, elements, work)]
    in forward order; work is multiply-adds plus memory passes per batch."""
    n = (depth - 2) // 6
    if depth < 8 or (depth - 2) % 6:
        raise SystemExit("model.py: resnet depth must be 6n+2 (8, 20, ...), not %d" % depth)
    out = []

    def conv(name, ci, co, k, hw_out):
        macs = ci * co * k * k * hw_out * hw_out * batch
        out.append((name + ".weight", co * ci * k * k, 2.0 * macs))

    def bn(name, c, hw_):
        # batch norm + ReLU: a few memory passes over the activations, as
        # costly per element as ~25 flops of a GEMM on this machine's BLAS
        act = c * hw_ * hw_ * batch
        out.append((name + ".gamma", c, 25.0 * act))
        out.append((name + ".beta", c, 0.0))

    conv("conv1", cin, width, 3, hw)
    bn("bn1", width, hw)
    c, size = width, hw
    for stage in range(3):
        co = width << stage
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            size_out = (size + stride - 1) // stride
            pre = "layer%d.%d" % (stage + 1, b)
            conv(pre + ".conv1", c, co, 3, size_out)
            bn(pre + ".bn1", co, size_out)
            conv(pre + ".conv2", co, co, 3, size_out)
            bn(pre + ".bn2", co, size_out)
            c, size = co, size_out
    out.append(("fc.weight", c * classes, 2.0 * c * classes * batch))
    out.append(("fc.bias", classes, 0.0))
    return out


def model_tensors(name, batch=64):
    if name.startswith("resnet"):
        return resnet_tensors(int(name[6:]), batch=batch)
    raise SystemExit("model.py: unknown model '%s' (resnet<6n+2>)" % name)


# ---- keys, parts, bytes ----------------------------------------------------------


def gcd(a, b):
    return math.gcd(a, b)


def payload_bytes(compressor, n, block):
    if compressor == "none":
        return align(4 * n)
    if compressor == "sign":
        return align((n + 7) // 8)
    nb = (n + block - 1) // block if block else 1
    return align(4 * nb) + align((n + 7) // 8)


class Key:
    def __init__(self, index, members, n, block):
        self.index, self.members, self.n, self.block = index, members, n, block
        self.parts = []  # [(n, bytes on the wire, server)]


def make_keys(tensors, compressor, block, group_below=512, servers=1,
              partition_bytes=4 << 20):
    """efps-train's keys (sync.c) and the server of each part (layout.c)."""
    group = [i for i, t in enumerate(tensors) if t[1] < group_below]
    keys = []
    if len(group) >= 2:
        gn, gblock = 0, 0
        for i in group:
            gblock = gcd(gblock, gn)
            gn += tensors[i][1]
        gblock = gcd(gblock, block)
    else:
        group = []
    for i, t in enumerate(tensors):
        if group and i == group[0]:
            keys.append(Key(i, list(group), gn, gblock))
        elif i not in group:
            keys.append(Key(i, [i], t[1], block))
    load = [0] * servers
    for k in keys:
        pe = max(16, partition_bytes // 4)
        if compressor == "blocksign" and k.block and pe >= k.block:
            pe -= pe % k.block
        off = 0
        while off < k.n:
            n = min(pe, k.n - off)
            b = payload_bytes(compressor, n, k.block) + TRAILER
            s = min(range(servers), key=lambda j: (load[j], j))
            load[s] += align(b)
            k.parts.append((n, b + FRAME_HEADER, s))
            off += n
    return keys


# ---- kernels ----------------------------------------------------------------------


class Kernels:
    """Seconds per element of the worker's and server's steps, from
    bench_compress' bytes/s (calibrate.sh) or defaults of 1 GB/s."""

    def __init__(self, calib):
        k = calib.get("kernels_Bps", {})
        self.ref = k.get("reference", 1e9)
        self.enc = k.get("ef_compress_to_b2048", self.ref)
        self.red = k.get("server_reduce_to_m4", self.ref)
        self.dec = k.get("decompress_add", self.ref)
        self.sign = k.get("sign_majority_m5", self.ref)

    def encode(self, comp, n):
        # blocksign: the bench counts 12 n + packed bytes; none and sign: a
        # memory pass over gradient, momentum and error
        return (12.0 * n + n / 8) / (self.enc if comp == "blocksign" else self.ref)

    def decode(self, comp, n):
        return (8.0 * n + n / 8) / (self.dec if comp != "none" else self.ref)

    def reduce(self, comp, n, m):
        ps = n / 8.0
        if comp == "blocksign":
            return (8.0 * n + (m + 1) * ps) / self.red
        if comp == "sign":
            return (m + 2) * ps / self.sign
        return 4.0 * (m + 1) * n / self.ref


# ---- the parameter-server step --------------------------------------------------


def ps_step(tensors, keys, compute, m, servers, rate_bps, latency, comp, kern,
            duplex="full", steps=6):
    """Seconds per step of a synchronous PS run, by a small event simulation."""
    fwd_frac = 1.0 / 3.0
    work = sum(t[2] for t in tensors) or 1.0
    f = [compute * fwd_frac * t[2] / work for t in tensors]
    b = [compute * (1 - fwd_frac) * t[2] / work for t in tensors]
    key_of = {}
    for k in keys:
        for i in k.members:
            key_of[i] = k
    bps = rate_bps * TCP_EFFICIENCY / 8.0 if rate_bps > 0 else float("inf")
    up = dn = 0.0
    ingress = [0.0] * servers
    egress = [0.0] * servers
    scpu = [0.0] * servers
    ready = {}  # key index -> time its update is at the worker
    t = 0.0
    starts = []
    for step in range(steps):
        starts.append(t)
        pulled = set()
        for i in range(len(tensors)):  # forward: pull before first use
            k = key_of[i]
            if step > 0 and k.index not in pulled:
                t = max(t, ready[k.index]) + kern.decode(comp, k.n)
                pulled.add(k.index)
            t += f[i]
        arrived = {k.index: 0 for k in keys}
        for i in reversed(range(len(tensors))):  # backward: push when final
            t += b[i]
            k = key_of[i]
            arrived[k.index] += 1
            if arrived[k.index] < len(k.members):
                continue
            t += kern.encode(comp, k.n)
            done = t
            for (n, nbytes, s) in k.parts:
                w = nbytes / bps
                start = max(t, up)
                up = start + w
                ing = max(t, ingress[s])
                ingress[s] = max(ing + m * w, up)
                if duplex == "half":
                    egress[s] = ingress[s]
                arrive = ingress[s] + latency
                red = max(arrive, scpu[s]) + kern.reduce(comp, n, m)
                scpu[s] = red
                eg = max(red, egress[s])
                egress[s] = eg + m * w
                if duplex == "half":
                    ingress[s] = egress[s]
                dstart = max(red, dn)
                dn = max(dstart + w, egress[s])
                done = max(done, dn + latency)
            ready[k.index] = done
    tail = starts[-1] - starts[len(starts) // 2]
    return tail / (len(starts) - 1 - len(starts) // 2)


# ---- the peers' references: ring all-reduce, PowerSGD --------------------------------


def ring_step(tensors, compute, m, rate_bps, latency, elem_bytes=4, bucket=25 << 20,
              extra_bytes=None, extra_compute=0.0, rounds=1):
    """DDP: buckets of gradients all-reduced in backward order, one at a time."""
    fwd_frac = 1.0 / 3.0
    work = sum(t[2] for t in tensors) or 1.0
    bps = rate_bps * TCP_EFFICIENCY / 8.0 if rate_bps > 0 else float("inf")
    t = compute * fwd_frac
    ring = 0.0
    acc = 0
    sizes = extra_bytes or [elem_bytes * x[1] for x in tensors]
    for i in reversed(range(len(tensors))):
        t += compute * (1 - fwd_frac) * tensors[i][2] / work
        acc += sizes[i]
        if acc >= bucket or i == 0:
            start = max(t, ring)
            ring = start + rounds * (2.0 * (m - 1) / m * acc / bps + 2 * (m - 1) * latency)
            acc = 0
    return max(t, ring) + extra_compute


def powersgd_step(tensors, compute, m, rate_bps, latency, rank=4):
    """PowerSGD (rank r): P (rows x r) and Q (cols x r) of each matrix in two
    all-reduce rounds; vectors as they are; its products cost 4 n r flops."""
    sizes, flops = [], 0.0
    for name, n, _ in tensors:
        if name.endswith(".weight") and n >= 512:
            # output channels: ResNet convolutions have 16/32/64, fc 10
            rows = next(c for c in (64, 32, 16, 10) if n % c == 0)
            cols = n // rows
            sizes.append(4 * rank * (rows + cols) / 2.0)  # two rounds carry this in halves
            flops += 4.0 * n * rank
        else:
            sizes.append(4 * n / 2.0)
    work = sum(t[2] for t in tensors) or 1.0
    flop_rate = work / compute if compute > 0 else float("inf")
    return ring_step(tensors, compute, m, rate_bps, latency, extra_bytes=sizes,
                     extra_compute=flops / flop_rate, rounds=2)


# ---- inputs ----------------------------------------------------------------------


def parse_rate(text):
    t = str(text).lower()
    if t in ("none", "0", ""):
        return 0.0
    for unit, mult in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * mult
    return float(t)


def load_calib(path):
    if not path:
        return {}
    with open(path) as f:
        return json.load(f)


def calib_compute(calib, model, m):
    """Compute seconds per step of one worker among m on this machine."""
    c = calib.get("compute_s", {}).get(model, {})
    if str(m) in c:
        return c[str(m)]
    if c:  # nearest measured worker count, scaled by the cores they share
        cores = calib.get("cores", 2)
        near = min(c, key=lambda x: abs(int(x) - m))
        return c[near] * max(1.0, m / cores) / max(1.0, int(near) / cores)
    raise SystemExit("model.py: no compute time for %s in the calibration" % model)


def predict(calib, model, m, servers, rate_bps, comp, block=2048, compute=None,
            latency=None, duplex=None, batch=64, partition_bytes=4 << 20):
    tensors = model_tensors(model, batch)
    if compute is None:
        compute = calib_compute(calib, model, m)
    if latency is None:
        latency = calib.get("latency_s", 100e-6)
    kern = Kernels(calib)
    if comp in ("none", "sign", "blocksign"):
        keys = make_keys(tensors, comp, block, servers=servers,
                         partition_bytes=partition_bytes or 4 << 20)
        return ps_step(tensors, keys, compute, m, servers, rate_bps, latency, comp, kern,
                       duplex or calib.get("duplex", "full"))
    if comp == "ring-fp32":
        return ring_step(tensors, compute, m, rate_bps, latency, 4)
    if comp == "ring-fp16":
        return ring_step(tensors, compute, m, rate_bps, latency, 2)
    if comp == "powersgd":
        return powersgd_step(tensors, compute, m, rate_bps, latency)
    raise SystemExit("model.py: unknown scheme '%s'" % comp)


# ---- commands ----------------------------------------------------------------------


def cmd_keys(a):
    tensors = model_tensors(a.model)
    keys = make_keys(tensors, a.compressor, a.block, servers=a.servers)
    print("%s: %d parameters in %d tensors, %d keys" % (
        a.model, sum(t[1] for t in tensors), len(tensors), len(keys)))
    total = 0
    for k in keys:
        for (n, nb, s) in k.parts:
            total += nb - FRAME_HEADER
            print("key %3d  %8d elements  %9d bytes  server %d%s" % (
                k.index, n, nb - FRAME_HEADER, s, "  (group of %d)" % len(k.members)
                if len(k.members) > 1 else ""))
    print("push bytes per worker and step (efps_ps_traffic): %d" % total)


def cmd_predict(a):
    calib = load_calib(a.calib)
    r = parse_rate(a.rate)
    for comp in a.compressor.split(","):
        t = predict(calib, a.model, a.workers, a.servers, r, comp, a.block, a.compute,
                    duplex=a.duplex, partition_bytes=a.partition_bytes)
        print("%-10s %s M=%d S=%d %s: %.4f s per step" % (comp, a.model, a.workers, a.servers,
                                                          a.rate, t))


def read_summary(d):
    with open(os.path.join(d, "summary.csv")) as f:
        return next(csv.DictReader(f))


def measured(d):
    """From every worker's steps but each epoch's first (set-up, no pulls)
    and last (it pulls two steps' updates): the mean step, and the mean over
    steps of the slowest worker's compute (every worker waits for it)."""
    rows = []
    for name in sorted(os.listdir(d)):
        if name.startswith("steps."):
            with open(os.path.join(d, name)) as f:
                rows += list(csv.DictReader(f))
    last = {}
    for r in rows:
        last[r["epoch"]] = max(last.get(r["epoch"], 0), int(r["step"]))
    rows = [r for r in rows if 1 < int(r["step"]) < last[r["epoch"]]]
    if not rows:
        raise SystemExit("model.py: %s has too few steps (3 per epoch at least)" % d)
    worst = {}
    for r in rows:
        k = (r["epoch"], r["step"])
        worst[k] = max(worst.get(k, 0.0), float(r["compute_s"]))
    step = sum(float(r["step_s"]) for r in rows) / len(rows)
    return step, sum(worst.values()) / len(worst)


def cmd_validate(a):
    calib = load_calib(a.calib)
    rows = []
    if a.markdown:
        return validate_markdown(a, calib)
    print("%-10s %2s %2s %9s %8s %8s | %9s %6s | %9s %6s | %s" % (
        "compressor", "M", "S", "rate", "measured", "slowest", "predicted", "error",
        "own comp.", "error", "run"))
    for d in a.runs:
        s = read_summary(d)
        m, srv, rate = int(s["workers"]), int(s["servers"]), float(s["rate_bps"])
        comp, model = s["compressor"], s["model"]
        meas, own = measured(d)
        pb = int(s.get("partition_bytes") or 0)
        p1 = predict(calib, model, m, srv, rate, comp, duplex=a.duplex, partition_bytes=pb)
        p2 = predict(calib, model, m, srv, rate, comp, compute=own, duplex=a.duplex,
                     partition_bytes=pb)
        e1, e2 = p1 / meas - 1, p2 / meas - 1
        rows.append((e1, e2))
        print("%-10s %2d %2d %6g Mb %8.3f %8.3f | %9.3f %+5.0f%% | %9.3f %+5.0f%% | %s" % (
            comp, m, srv, rate / 1e6, meas, own, p1, 100 * e1, p2, 100 * e2,
            os.path.basename(os.path.normpath(d))))
    if rows:
        for j, what in ((0, "calibrated compute"),
                        (1, "each run's own compute (its slowest worker's, per step)")):
            errs = [abs(r[j]) for r in rows]
            print("with %s: mean |error| %.0f%%, max %.0f%%, within 15%%: %d of %d" % (
                what, 100 * sum(errs) / len(errs), 100 * max(errs),
                sum(e <= 0.15 for e in errs), len(errs)))


def validate_markdown(a, calib):
    """The README's table: one row per run."""
    print("| model | M | S | link | compressor | parts | step (s) | slowest compute (s) | "
          "busiest link on the wire (s) | step / wire | predicted (s) | error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    errs = []
    for d in a.runs:
        s = read_summary(d)
        m, srv, rate = int(s["workers"]), int(s["servers"]), float(s["rate_bps"])
        meas, own = measured(d)
        p = predict(calib, s["model"], m, srv, rate, s["compressor"], compute=own,
                    duplex=a.duplex, partition_bytes=int(s.get("partition_bytes") or 0))
        wire = float(s["wire_step_s"])
        errs.append(abs(p / meas - 1))
        pb = int(s.get("partition_bytes") or 0)
        parts = "%d KiB" % (pb // 1024) if pb else "4 MiB"
        print("| %s | %d | %d | %g Mb/s | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %+.0f%% |" % (
            s["model"], m, srv, rate / 1e6, s["compressor"], parts, meas, own, wire, meas / wire,
            p, 100 * (p / meas - 1)))
    print("\nmean |error| %.0f%%, max %.0f%%, %d of %d within 15%%" % (
        100 * sum(errs) / len(errs), 100 * max(errs), sum(e <= 0.15 for e in errs), len(errs)))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys", help="the keys of a model, their bytes and servers")
    k.add_argument("--model", default="resnet20")
    k.add_argument("--compressor", default="blocksign", choices=["none", "sign", "blocksign"])
    k.add_argument("--block", type=int, default=2048)
    k.add_argument("--servers", type=int, default=1)
    pr = sub.add_parser("predict", help="seconds per step of a setting")
    pr.add_argument("--calib", default="")
    pr.add_argument("--model", default="resnet20")
    pr.add_argument("--workers", type=int, default=4)
    pr.add_argument("--servers", type=int, default=1)
    pr.add_argument("--rate", default="10mbit")
    pr.add_argument("--compressor", default="none,blocksign,sign,ring-fp32,ring-fp16,powersgd",
                    help="comma-separated: none, sign, blocksign, ring-fp32, ring-fp16, powersgd")
    pr.add_argument("--block", type=int, default=2048)
    pr.add_argument("--compute", type=float, default=None,
                    help="compute seconds per step (default: the calibration's)")
    pr.add_argument("--duplex", choices=["full", "half"], default=None)
    pr.add_argument("--partition-bytes", type=int, default=4 << 20,
                    help="largest part of a tensor, fp32 bytes (EFPS_PARTITION_BYTES)")
    v = sub.add_parser("validate", help="predicted against measured runs of cluster.sh")
    v.add_argument("--calib", required=True)
    v.add_argument("--duplex", choices=["full", "half"], default=None)
    v.add_argument("--markdown", action="store_true",
                   help="a table of the runs with each run's own compute")
    v.add_argument("runs", nargs="+", help="cluster.sh --out directories")
    a = p.parse_args(argv)
    {"keys": cmd_keys, "predict": cmd_predict, "validate": cmd_validate}[a.cmd](a)


if __name__ == "__main__":
    main(sys.argv[1:])
