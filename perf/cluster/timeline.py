#!/usr/bin/python3
"""Link use over time of a cluster.sh run made with --sample MS: for every
BIN seconds, each host link's bytes in and out as a fraction of the rate, and
where each worker's steps start (with the step's pull, compute and push
seconds). Shows whether both directions of the server's link are busy.

  timeline.py RUN_DIR [--from STEP] [--to STEP] [--bin SECONDS]
"""
import argparse
import bisect
import csv
import glob
import os


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--from", dest="first", type=int, default=3, help="worker 0's step")
    p.add_argument("--to", dest="last", type=int, default=6)
    p.add_argument("--bin", type=float, default=0.2, help="seconds")
    a = p.parse_args()
    with open(os.path.join(a.run, "summary.csv")) as f:
        rate = float(next(csv.DictReader(f))["rate_bps"]) or 1e9
    with open(os.path.join(a.run, "samples.csv")) as f:
        rows = list(csv.reader(f))
    hdr = rows[0]
    data = [[float(x) for x in r] for r in rows[1:] if len(r) == len(hdr)]
    ts = [r[0] for r in data]
    steps = {}
    for name in glob.glob(os.path.join(a.run, "steps.*")):
        with open(name) as f:
            steps[int(name.rsplit(".", 1)[1])] = [
                {k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    t0 = steps[0][a.first - 1]["start_s"]
    t1 = steps[0][min(a.last, len(steps[0])) - 1]["start_s"]
    marks = sorted((r["start_s"], "worker %d starts step %d (pull %.2f, compute %.2f, push %.2f s)"
                    % (w, r["step"], r["pull_s"], r["compute_s"], r["push_s"]))
                   for w in steps for r in steps[w])

    def at(t, col):
        return data[min(bisect.bisect_left(ts, t), len(ts) - 1)][col]

    print("%7s " % "t (s)" + " ".join("%7s" % h for h in hdr[1:]))
    mi, t = 0, t0
    while t < t1:
        while mi < len(marks) and marks[mi][0] < t + a.bin:
            if marks[mi][0] >= t:
                print("%7.2f %s" % (marks[mi][0] - t0, marks[mi][1]))
            mi += 1
        print("%7.2f " % (t - t0) + " ".join(
            "%7.2f" % ((at(t + a.bin, c) - at(t, c)) * 8 / a.bin / rate)
            for c in range(1, len(hdr))))
        t += a.bin


if __name__ == "__main__":
    main()
