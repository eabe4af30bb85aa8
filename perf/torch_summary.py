#!/usr/bin/python3
"""The table of perf/torch_compare.sh: reads DIR/torch_<run>.csv, .log and
.lo for each run and writes DIR/torch_compare.csv and DIR/torch_compare.md
(the table, then the issue's bars computed from it).

usage: torch_summary.py DIR RUN...
       torch_summary.py --seeds DIR "S ..." RUN...   (DIR/seedS/ per seed: the
       means and spreads over the seeds, DIR/torch_seeds.md and .csv)"""
import csv
import os
import re
import sys


def load(d, name):
    path = os.path.join(d, f"torch_{name}.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    with open(os.path.join(d, f"torch_{name}.log")) as f:
        log = f.read()
    lo_path = os.path.join(d, f"torch_{name}.lo")
    lo_run = None
    if os.path.exists(lo_path):
        with open(lo_path) as f:
            txt = f.read().strip()
        lo_run = int(txt) if txt.isdigit() else None
    lo = rows[-1].get("loopback_bytes") or None
    cpu = re.search(r"job cpu_s ([0-9.]+)", log)
    load_avg = re.search(r"load_average before ([0-9.]+) .* after ([0-9.]+)", log)
    wall = re.search(r"run_wall_s ([0-9.]+)", log)
    last = rows[-1]
    steps = int(last["steps"])
    train_s = sum(float(r["epoch_s"]) for r in rows)
    return dict(name=name, rows=rows, steps=steps, acc=float(last["test_acc"]),
                accs=[float(r["test_acc"]) for r in rows], train_s=train_s,
                step_ms=1000.0 * train_s / steps, wire=int(last["wire_bytes"]),
                fp32=int(last["fp32_bytes"]), method=last["wire_method"],
                lo=None if lo is None else int(lo), lo_run=lo_run,
                cpu_s=float(cpu.group(1)) if cpu else None,
                run_wall=float(wall.group(1)) if wall else None,
                load=(float(load_avg.group(1)), float(load_avg.group(2))) if load_avg else None)


def mb(b):
    return "" if b is None else f"{b / 1e6:,.1f}"


def main():
    d, names = sys.argv[1], sys.argv[2:]
    runs = [r for r in (load(d, n) for n in names) if r]
    if not runs:
        sys.exit("torch_summary: no results in " + d)
    by = {r["name"]: r for r in runs}
    ref = by.get("ddp-fp32")
    fields = ["run", "steps", "test_acc", "test_acc_by_epoch", "train_s", "step_ms", "job_cpu_s_per_step",
              "wire_bytes", "wire_method", "loopback_bytes_training", "loopback_bytes_whole_run",
              "ddp_fp32_wire_over_wire", "run_wall_s"]
    table = []
    for r in runs:
        table.append({
            "run": r["name"], "steps": r["steps"], "test_acc": f"{r['acc']:.2f}",
            "test_acc_by_epoch": " / ".join(f"{a:.2f}" for a in r["accs"]),
            "train_s": f"{r['train_s']:.1f}", "step_ms": f"{r['step_ms']:.0f}",
            "job_cpu_s_per_step": "" if r["cpu_s"] is None else f"{r['cpu_s'] / r['steps']:.2f}",
            "wire_bytes": r["wire"], "wire_method": r["method"],
            "loopback_bytes_training": "" if r["lo"] is None else r["lo"],
            "loopback_bytes_whole_run": "" if r["lo_run"] is None else r["lo_run"],
            "ddp_fp32_wire_over_wire": f"{ref['wire'] / r['wire']:.1f}" if ref and r["wire"] else "",
            "run_wall_s": "" if r["run_wall"] is None else f"{r['run_wall']:.0f}"})
    with open(os.path.join(d, "torch_compare.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(table)
    md = ["| run | test acc (%) by epoch | final | ms/step | job CPU s/step | wire MB (how) | "
          "loopback MB, training (whole run) | DDP fp32 wire / wire | run wall s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for t, r in zip(table, runs):
        md.append(f"| {t['run']} | {t['test_acc_by_epoch']} | **{t['test_acc']}** | {t['step_ms']} | "
                  f"{t['job_cpu_s_per_step']} | {mb(r['wire'])} ({r['method']}) | {mb(r['lo'])} ({mb(r['lo_run'])}) | "
                  f"{t['ddp_fp32_wire_over_wire']} | {t['run_wall_s']} |")
    md.append("")
    md += bars(by)
    text = "\n".join(md) + "\n"
    with open(os.path.join(d, "torch_compare.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)


def bars(by):
    """The issue's bars, each with its numbers and met / NOT met."""
    out = []
    bs, none, ddp = by.get("efps-blocksign"), by.get("efps-none"), by.get("ddp-fp32")

    def say(ok, text):
        out.append(f"- {'met' if ok else 'NOT met'}: {text}")

    if bs and none:
        gap = none["acc"] - bs["acc"]
        say(gap <= 0.5, f"blocksign {bs['acc']:.2f}% vs efps none {none['acc']:.2f}% "
            f"({gap:+.2f} points below; bar: at most 0.5)")
    if bs and ddp:
        gap = ddp["acc"] - bs["acc"]
        say(gap <= 0.5, f"blocksign {bs['acc']:.2f}% vs DDP fp32 {ddp['acc']:.2f}% "
            f"({gap:+.2f} points below; bar: at most 0.5)")
        if none:
            ratio = none["wire"] / bs["wire"]
            say(ratio >= 30, f"bytes on the wire against fp32 through the same servers: efps none "
                f"{mb(none['wire'])} MB / blocksign {mb(bs['wire'])} MB = {ratio:.1f}x (bar: at least 30x)")
        ratio = ddp["wire"] / bs["wire"]
        say(ratio >= 30, f"bytes on the wire against DDP's fp32 ring all-reduce (2(M-1)/M of the "
            f"gradient per worker, not 2 as push + pull): DDP fp32 {mb(ddp['wire'])} MB / blocksign "
            f"{mb(bs['wire'])} MB = {ratio:.1f}x (bar: at least 30x)")
        if bs["lo"] and ddp["lo"]:
            out.append(f"- measured on the loopback while training (every byte any process sent, "
                       f"TCP/IP headers included): "
                       f"DDP fp32 {mb(ddp['lo'])} MB / blocksign {mb(bs['lo'])} MB = "
                       f"{ddp['lo'] / bs['lo']:.1f}x")
    def step_time(a, b, limit, bar):
        r = a["step_ms"] / b["step_ms"]
        say(r <= limit, f"time per step, {a['name']} {a['step_ms']:.0f} ms vs {b['name']} "
            f"{b['step_ms']:.0f} ms = {r:.2f}x (bar: {bar})")
        if a["cpu_s"] and b["cpu_s"]:
            ca, cb = a["cpu_s"] / a["steps"], b["cpu_s"] / b["steps"]
            out.append(f"- the same in CPU seconds of the whole job per step (what other jobs on the "
                       f"machine do not inflate): {a['name']} {ca:.2f} s vs {b['name']} {cb:.2f} s "
                       f"= {ca / cb:.2f}x")

    if none and ddp:
        step_time(none, ddp, 1.2, "at most 1.2x")
    if bs and none:
        step_time(bs, none, 1.0, "not slower")
    return out


def spread(xs):
    m = sum(xs) / len(xs)
    return m, min(xs), max(xs)


def seeds_main(d, seeds, names):
    """Means and spreads over seeds; the bars on the means, and per seed
    (runs of one seed ran one after another: their time ratios are same-run)."""
    seeds = seeds.split()
    # a run counts once it has finished (its log ends with run_wall_s)
    per = {n: [r for r in (load(os.path.join(d, "seed" + s), n) for s in seeds)
               if r and r["run_wall"] is not None] for n in names}
    md = [f"Seeds {' '.join(seeds)}; accuracy: final test accuracy (%), mean [min, max]; bytes: "
          "all workers, per step; fp32/wire: the fp32 gradient bytes each way (push and pull) over "
          "the bytes sent (efps counted by libefps; DDP: the ring, computed).", "",
          "| run | seeds | test acc mean [min, max] | per seed (epoch 1 / final) | wire MB/step | "
          "fp32 / wire | "
          "DDP fp32 wire / wire | ms/step mean | job CPU s/step | load avg (before-after) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    ddp = per.get("ddp-fp32") or []
    for n in names:
        rs = per[n]
        if not rs:
            continue
        m, lo, hi = spread([r["acc"] for r in rs])
        wire = sum(r["wire"] / r["steps"] for r in rs) / len(rs)
        fp32 = sum(r["fp32"] / r["steps"] for r in rs) / len(rs)
        ddpw = sum(r["wire"] / r["steps"] for r in ddp) / len(ddp) if ddp else None
        step = sum(r["step_ms"] for r in rs) / len(rs)
        cpu = [r["cpu_s"] / r["steps"] for r in rs if r["cpu_s"]]
        loads = ", ".join(f"{r['load'][0]:.1f}-{r['load'][1]:.1f}" for r in rs if r["load"])
        row = dict(run=n, seeds=len(rs), acc_mean=f"{m:.2f}", acc_min=f"{lo:.2f}",
                   acc_max=f"{hi:.2f}",
                   accs="; ".join(" / ".join(f"{a:.2f}" for a in r["accs"]) for r in rs),
                   wire_mb_per_step=f"{wire / 1e6:.3f}", fp32_over_wire=f"{fp32 / wire:.1f}",
                   ddp_over_wire=f"{ddpw / wire:.1f}" if ddpw else "", step_ms=f"{step:.0f}",
                   cpu_s_per_step=f"{sum(cpu) / len(cpu):.2f}" if cpu else "", load=loads)
        rows.append(row)
        md.append(f"| {n} | {len(rs)} | **{m:.2f}** [{lo:.2f}, {hi:.2f}] | {row['accs']} | "
                  f"{row['wire_mb_per_step']} | {row['fp32_over_wire']} | {row['ddp_over_wire']} | "
                  f"{row['step_ms']} | {row['cpu_s_per_step']} | {loads} |")
    with open(os.path.join(d, "torch_seeds.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    md.append("")
    for s in seeds:
        by = {n: r for n in names for r in [load(os.path.join(d, "seed" + s), n)]
              if r and r["run_wall"] is not None}
        if not by:
            continue
        md.append(f"Seed {s}:")
        md += bars(by)
    text = "\n".join(md) + "\n"
    with open(os.path.join(d, "torch_seeds.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeds"]:
        seeds_main(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
