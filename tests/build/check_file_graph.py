#!/usr/bin/env python3
"""Checks that the files of a transport backend form a chain, not a circle
(issue 16): a reader can take the files one at a time, each needing only the
ones below it.

    check_file_graph.py SOURCE_DIR BUILD_DIR [backend...]   (default: tcp verbs)

The graph of one backend (transport/<backend>/): a node per file; an edge
A -> B when
  - A includes B (#include "..." naming a file of the same backend), or
  - A's object file uses a function that B's object file defines: the
    undefined symbols of A.o (nm -u) against the defined text symbols of
    B.o (nm --defined-only, type T), from the objects the build made.
A header's edges are its includes only; the functions it declares belong to
the .c files that define them. Any cycle (strongly connected component of
more than one file) fails the check and is printed with the edges inside it
and the symbols that make them. A backend that was not built (verbs without
rdma-core) is skipped with a line saying so, unless it is the only one asked.
Exit 0: every backend is a chain (a DAG); 1: a circle; 2: usage or missing
objects."""
import os
import re
import subprocess
import sys


def objects(build, backend):
    """file name (tcp_conn.c) -> path of its object in the build tree."""
    found = {}
    # build/transport/CMakeFiles/efps_transport.dir/tcp/ (one object library
    # per layer) or build/CMakeFiles/efps_obj.dir/transport/tcp/ (older trees)
    for root, _, files in os.walk(build):
        if os.path.basename(root) != backend or "transport" not in root:
            continue
        for f in files:
            path = os.path.join(root, f)
            # a tree reconfigured across layouts keeps stale objects: the
            # newest object of a file is the one this build made
            if f.endswith(".c.o") and (f[:-2] not in found or
                                       os.path.getmtime(path) > os.path.getmtime(found[f[:-2]])):
                found[f[:-2]] = path
    return found


def nm(path, *flags):
    out = subprocess.run(["nm", "-P", *flags, path], check=True, capture_output=True,
                         text=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def graph(src, build, backend):
    d = os.path.join(src, "transport", backend)
    files = sorted(f for f in os.listdir(d) if f.endswith((".c", ".h")))
    edges = {f: {} for f in files}  # a -> {b: [why...]}
    inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
    for f in files:
        with open(os.path.join(d, f)) as fh:
            for line in fh:
                m = inc.match(line)
                if m and os.path.basename(m.group(1)) in edges and m.group(1).split("/")[-2:-1] in ([], [backend]):
                    edges[f].setdefault(os.path.basename(m.group(1)), []).append("#include")
    objs = objects(build, backend)
    cfiles = [f for f in files if f.endswith(".c")]
    missing = [f for f in cfiles if f not in objs]
    if missing:
        return None, missing
    defined = {}
    for f in cfiles:
        for s in nm(objs[f], "--defined-only"):
            if len(s) >= 2 and s[1] == "T":
                defined[s[0]] = f
    for f in cfiles:
        for s in nm(objs[f], "-u"):
            b = defined.get(s[0])
            if b is not None and b != f:
                edges[f].setdefault(b, []).append(s[0])
    return edges, None


def cycles(edges):
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, build, backends = argv[1], argv[2], argv[3:] or ["tcp", "verbs"]
    bad = 0
    for b in backends:
        edges, missing = graph(src, build, b)
        if edges is None:
            if len(backends) == 1 or b == "tcp":
                print(f"{b}: no object for {', '.join(missing)} under {build}", file=sys.stderr)
                return 2
            print(f"{b}: not built here ({', '.join(missing)} missing): skipped")
            continue
        comps = cycles(edges)
        n_edges = sum(len(v) for v in edges.values())
        if not comps:
            print(f"{b}: {len(edges)} files, {n_edges} edges, no circle")
            continue
        bad += 1
        for comp in comps:
            print(f"{b}: CIRCLE among {', '.join(comp)}:")
            for a in comp:
                for t, why in sorted(edges[a].items()):
                    if t in comp:
                        print(f"    {a} -> {t}: {', '.join(sorted(set(why))[:6])}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
