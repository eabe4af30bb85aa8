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


def resnet50_imagenet(batch=256):
    """torchvision's ResNet-50 (v1.5) at 224 x 224: 25,557,032 parameters in
    161 tensors (53 convolutions, 53 batch norms, fc weight and bias)."""
    out = []

    def conv(name, ci, co, k, hw_out):
        out.append((name + ".weight", co * ci * k * k, 2.0 * ci * co * k * k * hw_out * hw_out * batch))

    def bn(name, c, hw_):
        out.append((name + ".gamma", c, 25.0 * c * hw_ * hw_ * batch))
        out.append((name + ".beta", c, 0.0))

    conv("conv1", 3, 64, 7, 112)
    bn("bn1", 64, 112)
    c, size = 64, 56
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512))):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            size_out = size // stride
            pre = "layer%d.%d" % (stage + 1, b)
            conv(pre + ".conv1", c, width, 1, size)
            bn(pre + ".bn1", width, size)
            conv(pre + ".conv2", width, width, 3, size_out)
            bn(pre + ".bn2", width, size_out)
            conv(pre + ".conv3", width, 4 * width, 1, size_out)
            bn(pre + ".bn3", 4 * width, size_out)
            if b == 0:
                conv(pre + ".downsample", c, 4 * width, 1, size_out)
                bn(pre + ".downsample.bn", 4 * width, size_out)
            c, size = 4 * width, size_out
    out.append(("fc.weight", c * 1000, 2.0 * c * 1000 * batch))
    out.append(("fc.bias", 1000, 0.0))
    return out


def model_tensors(name, batch=64):
    if name == "resnet50-imagenet":
        return resnet50_imagenet(batch)
    if name.startswith("resnet"):
        return resnet_tensors(int(name[6:]), batch=batch)
    raise SystemExit("model.py: unknown model '%s' (resnet<6n+2>, resnet50-imagenet)" % name)


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


def auto_partition(total_n, compressor, block, servers):
    """lib/ps/worker.c's partition when EFPS_PARTITION_BYTES is unset: about
    64 parts in a server's share of the wire bytes, at least 4 KiB of them on
    the wire, a power of two of fp32 bytes, whole blocks."""
    probe = 1 << 20
    ratio = payload_bytes(compressor, probe, block) / (4.0 * probe)
    want = max(4.0 * total_n * ratio / servers / 64, 4096.0) / ratio
    p = 4096
    while p < 4 << 20 and 2 * p <= want:
        p *= 2
    while compressor == "blocksign" and p < 4 * block:
        p *= 2
    return p


def make_keys(tensors, compressor, block, group_below=512, servers=1,
              partition_bytes=0):
    """efps-train's keys (sync.c) and the server of each part (layout.c);
    partition_bytes 0: the library's choice (auto_partition)."""
    if not partition_bytes:
        partition_bytes = (4 << 20 if compressor == "blocksign" and not block else
                           auto_partition(sum(t[1] for t in tensors), compressor, block, servers))
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


def compute_split(tensors, compute, overlap):
    """Forward and backward seconds per tensor: a third and two thirds of the
    step's compute in proportion to each layer's work; overlap < 1 moves that
    share of backward before it (as if backward's pushes came later)."""
    work = sum(t[2] for t in tensors) or 1.0
    bwd = compute * 2.0 / 3.0 * overlap
    fwd = compute - bwd
    return ([fwd * t[2] / work for t in tensors], [bwd * t[2] / work for t in tensors])


def ps_step(tensors, keys, compute, m, servers, rate_bps, latency, comp, kern,
            duplex="full", steps=6, colocated=False, overlap=1.0):
    """Seconds per step of a synchronous PS run, by a small event simulation
    of worker 0 (the others alike). colocated: server s on worker s's host:
    a worker's copy of its own server's parts never leaves the host, and
    each host's link carries both its worker's and its server's traffic,
    modelled as two flows sharing the rate in proportion to their bytes
    (both run most of the step; a FIFO of the two would serialise them)."""
    f, b = compute_split(tensors, compute, overlap)
    key_of = {}
    for k in keys:
        for i in k.members:
            key_of[i] = k
    bps = rate_bps * TCP_EFFICIENCY / 8.0 if rate_bps > 0 else float("inf")
    # links as the times they are busy until: worker 0's up/down, each
    # server's ingress/egress
    link = {"up": 0.0, "dn": 0.0}
    for s in range(servers):
        link["in%d" % s] = link["out%d" % s] = 0.0
    up, dn = "up", "dn"
    wshare = 1.0  # the worker's share of its link's rate
    if colocated:
        total = sum(nb for k in keys for (_, nb, _) in k.parts)
        own = sum(nb for k in keys for (_, nb, s) in k.parts if s == 0)
        wshare = (total - own) / float(total - own + (m - 1) * own)
    scpu = [0.0] * servers
    ready = {}  # key index -> time its update is at the worker
    t = 0.0
    starts = []
    copies = m - 1 if colocated else m  # pushes crossing a server's link
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
                w = nbytes / bps / wshare  # a worker's copy, on its link
                ws = nbytes / bps / (1 - wshare if colocated else 1.0)  # on a server's
                local = colocated and s == 0
                ins, outs = "in%d" % s, "out%d" % s
                pushed = t
                if not local:
                    link[up] = max(t, link[up]) + w
                    pushed = link[up]
                ing = max(t, link[ins])
                link[ins] = max(ing + copies * ws, pushed)
                if duplex == "half":
                    link[outs] = link[ins]
                red = max(link[ins] + latency, scpu[s]) + kern.reduce(comp, n, m)
                scpu[s] = red
                link[outs] = max(red, link[outs]) + copies * ws
                if duplex == "half":
                    link[ins] = link[outs]
                if local:
                    done = max(done, red)
                else:
                    link[dn] = max(max(red, link[dn]) + w, link[outs])
                    done = max(done, link[dn] + latency)
            ready[k.index] = done
    tail = starts[-1] - starts[len(starts) // 2]
    return tail / (len(starts) - 1 - len(starts) // 2)


# ---- the peers' references: ring all-reduce, PowerSGD --------------------------------


def ring_step(tensors, compute, m, rate_bps, latency, elem_bytes=4, bucket=25 << 20,
              extra_bytes=None, extra_compute=0.0, rounds=1, overlap=1.0):
    """DDP: buckets of gradients all-reduced in backward order, one at a time."""
    f, b = compute_split(tensors, compute, overlap)
    bps = rate_bps * TCP_EFFICIENCY / 8.0 if rate_bps > 0 else float("inf")
    t = sum(f)
    ring = 0.0
    acc = 0
    sizes = extra_bytes or [elem_bytes * x[1] for x in tensors]
    for i in reversed(range(len(tensors))):
        t += b[i]
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


OVERLAP = None  # --overlap: replaces the calibration's


def load_calib(path):
    calib = {}
    if path:
        with open(path) as f:
            calib = json.load(f)
    if OVERLAP is not None:
        calib["overlap"] = OVERLAP
    return calib


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
            latency=None, duplex=None, batch=64, partition_bytes=0, colocated=False,
            overlap=None):
    tensors = model_tensors(model, batch)
    if compute is None:
        compute = calib_compute(calib, model, m)
    if latency is None:
        latency = calib.get("latency_s", 100e-6)
    kern = Kernels(calib)
    if overlap is None:
        overlap = calib.get("overlap", 1.0)
    if comp in ("none", "sign", "blocksign"):
        keys = make_keys(tensors, comp, block, servers=servers, partition_bytes=partition_bytes)
        return ps_step(tensors, keys, compute, m, servers, rate_bps, latency, comp, kern,
                       duplex or calib.get("duplex", "full"), colocated=colocated,
                       overlap=overlap)
    if comp in ("ring-fp32", "ddp-fp32"):
        return ring_step(tensors, compute, m, rate_bps, latency, 4, overlap=overlap)
    if comp == "ring-fp16":
        return ring_step(tensors, compute, m, rate_bps, latency, 2, overlap=overlap)
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
                    duplex=a.duplex, partition_bytes=a.partition_bytes, colocated=a.colocated)
        print("%-10s %s M=%d S=%d %s: %.4f s per step" % (comp, a.model, a.workers, a.servers,
                                                          a.rate, t))


def run_setting(s):
    """predict()'s keywords for a run's summary row."""
    return {"partition_bytes": int(s.get("partition_bytes") or 0),
            "colocated": s.get("colocated", "0") == "1"}


def read_summary(d):
    with open(os.path.join(d, "summary.csv")) as f:
        return next(csv.DictReader(f))


def ddp_refs(runs):
    """DDP runs have no per-step split (train_resnet.py's epoch CSV): their
    compute is the step of the unshaped DDP run with the same M."""
    refs = {}
    for d in runs:
        s = read_summary(d)
        if s["compressor"].startswith("ddp") and float(s["rate_bps"]) == 0:
            refs[int(s["workers"])] = float(s["step_s"])
    return refs


def measured_any(d, s, refs):
    """(mean step, compute per step, is the compute reference itself)."""
    if s["compressor"].startswith("ddp"):
        m = int(s["workers"])
        if m not in refs:
            raise SystemExit("model.py: %s: DDP needs an unshaped DDP run with %d workers "
                             "among the runs (its compute)" % (d, m))
        return float(s["step_s"]), refs[m], float(s["rate_bps"]) == 0
    step, own = measured(d)
    return step, own, False


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
    refs = ddp_refs(a.runs)
    for d in a.runs:
        s = read_summary(d)
        m, srv, rate = int(s["workers"]), int(s["servers"]), float(s["rate_bps"])
        comp, model = s["compressor"], s["model"]
        meas, own, ref = measured_any(d, s, refs)
        if ref:
            continue
        kw = run_setting(s)
        try:  # with the calibration's compute, when it has the model
            p1 = predict(calib, model, m, srv, rate, comp, duplex=a.duplex, **kw)
        except SystemExit:
            p1 = float("nan")
        p2 = predict(calib, model, m, srv, rate, comp, compute=own, duplex=a.duplex, **kw)
        e1, e2 = p1 / meas - 1, p2 / meas - 1
        rows.append((e1, e2))
        print("%-10s %2d %2d %6g Mb %8.3f %8.3f | %9.3f %+5.0f%% | %9.3f %+5.0f%% | %s" % (
            comp, m, srv, rate / 1e6, meas, own, p1, 100 * e1, p2, 100 * e2,
            os.path.basename(os.path.normpath(d))))
    if rows:
        for j, what in ((0, "calibrated compute"),
                        (1, "each run's own compute (its slowest worker's, per step)")):
            errs = [abs(r[j]) for r in rows if r[j] == r[j]]
            if not errs:
                continue
            print("with %s: mean |error| %.0f%%, max %.0f%%, within 15%%: %d of %d" % (
                what, 100 * sum(errs) / len(errs), 100 * max(errs),
                sum(e <= 0.15 for e in errs), len(errs)))


def validate_markdown(a, calib):
    """The README's table: one row per run."""
    print("| model | M | S | link | compressor | parts | step (s) | slowest compute (s) | "
          "busiest link on the wire (s) | step / wire | predicted (s) | error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    errs = []
    refs = ddp_refs(a.runs)
    for d in a.runs:
        s = read_summary(d)
        m, srv, rate = int(s["workers"]), int(s["servers"]), float(s["rate_bps"])
        meas, own, ref = measured_any(d, s, refs)
        if ref:
            continue
        kw = run_setting(s)
        p = predict(calib, s["model"], m, srv, rate, s["compressor"], compute=own,
                    duplex=a.duplex, **kw)
        wire = float(s["wire_step_s"])
        errs.append(abs(p / meas - 1))
        pb = kw["partition_bytes"]
        parts = "%d KiB" % (pb // 1024) if pb else "auto"
        if s["compressor"].startswith("ddp"):
            parts = "25 MB buckets"
        servers = "%d%s" % (srv, " (on workers)" if kw["colocated"] else "")
        print("| %s | %d | %s | %g Mb/s | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %+.0f%% |" % (
            s["model"], m, servers, rate / 1e6, s["compressor"], parts, meas, own, wire,
            meas / wire, p, 100 * (p / meas - 1)))
    print("\nmean |error| %.0f%%, max %.0f%%, %d of %d within 15%%" % (
        100 * sum(errs) / len(errs), 100 * max(errs), sum(e <= 0.15 for e in errs), len(errs)))


def cmd_table(a):
    """README's emulated table: time per step of each scheme at each rate and
    M (1 server), blocksign's speed-up over none and over DDP fp32; with
    --dat, the same points and the model's predictions for gnuplot."""
    calib = load_calib(a.calib)
    refs = ddp_refs(a.runs)
    cell, pred = {}, {}
    for d in a.runs:
        s = read_summary(d)
        if int(s["servers"]) > 1 or s.get("colocated", "0") == "1":
            continue
        if d.rstrip("/").split("/")[-1].startswith("base-"):
            continue
        m, rate, comp = int(s["workers"]), float(s["rate_bps"]), s["compressor"]
        meas, own, ref = measured_any(d, s, refs)
        if ref:
            continue
        cell[(m, rate, comp)] = meas
        pred[(m, rate, comp)] = predict(calib, s["model"], m, int(s["servers"]) or 1, rate, comp,
                                        compute=own, **run_setting(s))
    comps = ("none", "sign", "blocksign", "ddp-fp32")
    print("| M | link | none (s) | sign (s) | blocksign (s) | DDP fp32 (s) | blocksign vs none | "
          "blocksign vs DDP fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for (m, rate) in sorted({(k[0], k[1]) for k in cell}, key=lambda x: (x[0], -x[1])):
        v = [cell.get((m, rate, c)) for c in comps]
        sp = lambda x: "%.2fx" % (x / v[2]) if x and v[2] else "-"
        print("| %d | %g Mb/s | %s | %s | %s |" % (
            m, rate / 1e6, " | ".join("%.2f" % x if x else "-" for x in v), sp(v[0]), sp(v[3])))
    if a.dat:
        with open(a.dat, "w") as f:
            f.write("# M rate_mbit scheme measured_s predicted_s\n")
            for k in sorted(cell):
                f.write("%d %g %s %.4f %.4f\n" % (k[0], k[1] / 1e6, k[2], cell[k], pred[k]))


# ResNet-50 (v1.5) training throughput of one GPU, batch 256, from NVIDIA's
# DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md,
# "Training performance results" (pytorch-21.03 NGC container): images/s.
GPUS = {"a100-amp": ("A100 80GB, mixed precision", 2470.0),
        "a100-tf32": ("A100 80GB, TF32", 938.0),
        "v100-amp": ("V100 16GB, mixed precision", 1200.0)}
NETWORKS = (("10 GbE", 10e9, 20e-6), ("25 GbE", 25e9, 20e-6), ("100 GbE", 100e9, 10e-6),
            ("HDR InfiniBand", 200e9, 2e-6))


def cmd_extrapolate(a):
    """ResNet-50 on ImageNet: time per step of none and blocksign over the PS
    (S = 1, M/4 on hosts of their own, M colocated) and DDP fp32 (ring)."""
    calib = load_calib(a.calib)
    # a GPU's backward runs its layers in order of their work: pushes overlap
    # it (the emulated runs on a loaded CPU did not: their calibration says 0)
    calib["overlap"] = 1.0 if a.overlap is None else a.overlap
    name, ips = GPUS[a.gpu]
    compute = a.batch / ips
    print("ResNet-50 / ImageNet, batch %d per GPU, compute %.1f ms per step (%s, %.0f images/s); "
          "ms per step (blocksign's wall-clock saving against the faster fp32 scheme)\n"
          % (a.batch, 1e3 * compute, name, ips))
    print("| network | M | DDP fp32 | none S=1 | none S=M/4 | none S=M (on workers) | "
          "blocksign S=1 | blocksign S=M/4 | blocksign S=M (on workers) | saving |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for net, rate, lat in NETWORKS:
        for m in a.nodes:
            row, best = [], {}
            ring = predict(calib, "resnet50-imagenet", m, 1, rate, "ring-fp32", compute=compute,
                           latency=lat, batch=a.batch)
            row.append(ring)
            for comp in ("none", "blocksign"):
                for srv, colo in ((1, False), (max(1, m // 4), False), (m, True)):
                    t = predict(calib, "resnet50-imagenet", m, srv, rate, comp, compute=compute,
                                latency=lat, batch=a.batch, colocated=colo)
                    row.append(t)
                    best[comp] = min(best.get(comp, t), t)
            fp32 = min(ring, best["none"])
            print("| %s | %d | %s | %.0f%% |" % (net, m, " | ".join("%.0f" % (1e3 * x) for x in row),
                                                100 * (1 - best["blocksign"] / fp32)))


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
    pr.add_argument("--partition-bytes", type=int, default=0,
                    help="largest part of a tensor, fp32 bytes (EFPS_PARTITION_BYTES; 0: the "
                    "library's choice)")
    pr.add_argument("--colocated", action="store_true", help="server s on worker s's host")
    v = sub.add_parser("validate", help="predicted against measured runs of cluster.sh")
    v.add_argument("--calib", required=True)
    v.add_argument("--duplex", choices=["full", "half"], default=None)
    v.add_argument("--markdown", action="store_true",
                   help="a table of the runs with each run's own compute")
    v.add_argument("runs", nargs="+", help="cluster.sh --out directories")
    t = sub.add_parser("table", help="README's emulated table from cluster.sh runs")
    t.add_argument("--calib", required=True)
    t.add_argument("--dat", help="also write the points and predictions for gnuplot here")
    t.add_argument("runs", nargs="+")
    e = sub.add_parser("extrapolate", help="ResNet-50 on ImageNet on 8-64 GPU nodes")
    e.add_argument("--calib", default="")
    e.add_argument("--gpu", choices=sorted(GPUS), default="a100-amp")
    e.add_argument("--batch", type=int, default=256)
    e.add_argument("--nodes", type=lambda x: [int(v) for v in x.split(",")], default=[8, 16, 32, 64])
    for sp in (pr, v, t, e):
        sp.add_argument("--overlap", type=float, default=None,
                        help="share of backward that overlaps the pushes (calibration's "
                        "'overlap', else 1): 0 = every push after the step's compute")
    a = p.parse_args(argv)
    global OVERLAP
    OVERLAP = a.overlap if a.cmd != "keys" else None
    {"keys": cmd_keys, "predict": cmd_predict, "validate": cmd_validate,
     "extrapolate": cmd_extrapolate, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main(sys.argv[1:])
