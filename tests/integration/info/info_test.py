#!/usr/bin/env python3
"""efps-info on a machine without RDMA (ctest info_host).

info_test.py EFPS_INFO VERSION_H PS_INT_H: runs efps-info with a clean
environment and checks what it says, its --json and its exit status."""
import json
import os
import re
import socket
import subprocess
import sys

info, version_h, ps_int_h = sys.argv[1:4]
failures = []


def run(*args, **env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("EFPS_") and k not in (
                "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID",
                "SLURM_NTASKS", "RANK", "WORLD_SIZE")}
    base.update(env)
    r = subprocess.run([info, *args], env=base, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def check(what, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else ": " + detail))
    if not cond:
        failures.append(what)


def as_json(*args, **env):
    rc, out, err = run("--json", *args, **env)
    # the same document through python3 -m json.tool, as a script would
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=out, capture_output=True,
                          text=True)
    check("json.tool parses --json %s" % " ".join(args), tool.returncode == 0, tool.stderr + out)
    return rc, json.loads(out), err


def define(path, name):
    m = re.search(r"#define %s\s+(\S+)" % name, open(path).read())
    return m.group(1).strip('"')


def checks(doc):
    return {c["check"]: c for c in doc["preflight"]["checks"]}


# Plain run: no RDMA device said plainly, everything ok or skipped.
rc, out, err = run()
check("plain run exits 0", rc == 0, "exit %d\n%s%s" % (rc, out, err))
check("says there is no RDMA device", "no RDMA device" in out, out)
check("nothing on stderr", err == "", err)

rc, doc, _ = as_json()
check("--json exits 0", rc == 0)
check("version is efps/version.h's", doc["version"] == define(version_h, "EFPS_VERSION_STRING"),
      doc["version"])
check("headers_version", doc["headers_version"] == define(version_h, "EFPS_VERSION_STRING"))
check("protocol version is PS_PROTO_VERSION",
      doc["protocol_version"] == int(define(ps_int_h, "PS_PROTO_VERSION")))
check("no ports", doc["rdma"]["ports"] == [] and "no RDMA device" in doc["rdma"]["note"],
      str(doc["rdma"]))
check("every setting listed with its source and layer",
      doc["config"]["EFPS_TIMEOUT_MS"] == {"value": "30000", "source": "default",
                                           "layer": "transport"},
      str(doc["config"].get("EFPS_TIMEOUT_MS")))
check("each layer's settings", [doc["config"][n]["layer"] for n in
      ("EFPS_LOG", "EFPS_SIMD", "EFPS_IB_GID", "EFPS_SERVERS")] ==
      ["core", "compress", "transport", "ps"])
check("kernel named", doc["cpu"]["kernel"] in ("scalar", "avx2", "avx512"))
check("summary: nothing failed", doc["summary"]["fail"] == 0, str(doc["summary"]))

# Sources: environment and launcher; the secret is never printed.
rc, doc, _ = as_json(EFPS_TIMEOUT_MS="1234", SLURM_PROCID="2", SLURM_NTASKS="4",
                     EFPS_SERVERS="127.0.0.1:1", EFPS_SECRET="s3cr3t-value",
                     EFPS_TRANSPORT="tcp")
cfg = doc["config"]
check("environment source", cfg["EFPS_TIMEOUT_MS"]["value"] == "1234" and
      cfg["EFPS_TIMEOUT_MS"]["source"] == "environment")
check("launcher source for the rank",
      cfg["EFPS_RANK"]["value"] == "1" and "SLURM_PROCID" in cfg["EFPS_RANK"]["source"],
      str(cfg["EFPS_RANK"]))
check("launcher source for the workers",
      cfg["EFPS_NUM_WORKERS"]["value"] == "3" and "SLURM_NTASKS" in cfg["EFPS_NUM_WORKERS"]["source"],
      str(cfg["EFPS_NUM_WORKERS"]))
check("role from the launcher", cfg["EFPS_ROLE"]["value"] == "worker", str(cfg["EFPS_ROLE"]))
check("secret not printed", "s3cr3t-value" not in json.dumps(doc), cfg["EFPS_SECRET"]["value"])

# A server that listens is ok; one that does not is a failed check, exit 1.
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4)
up = "127.0.0.1:%d" % listener.getsockname()[1]
closed = socket.socket()
closed.bind(("127.0.0.1", 0))
down = "127.0.0.1:%d" % closed.getsockname()[1]  # bound, never listening: refused
rc, doc, _ = as_json(EFPS_SERVERS=up, EFPS_SECRET="x", EFPS_TRANSPORT="tcp")
c = checks(doc)
check("reachable server ok, exit 0", rc == 0 and c["tcp " + up]["status"] == "ok", str(c))
rc, doc, _ = as_json(EFPS_SERVERS=up + "," + down, EFPS_SECRET="x", EFPS_TRANSPORT="tcp")
c = checks(doc)
check("unreachable server fails, exit 1",
      rc == 1 and c["tcp " + down]["status"] == "fail" and c["tcp " + up]["status"] == "ok",
      "exit %d %s" % (rc, c))
check("the failure says what to do", "efps-server" in (c["tcp " + down]["fix"] or ""),
      str(c["tcp " + down]))
rc, out, _ = run(EFPS_SERVERS=down, EFPS_SECRET="x", EFPS_TRANSPORT="tcp")
check("text report: fail line and fix", rc == 1 and re.search(r"fail +tcp %s" % down, out)
      and "fix:" in out, out)

# A job without a secret, a malformed value: failed checks.
rc, doc, _ = as_json(EFPS_SERVERS=up, EFPS_TRANSPORT="tcp")
check("no secret fails", rc == 1 and checks(doc)["secret"]["status"] == "fail")
rc, doc, _ = as_json(EFPS_SERVERS=up, EFPS_SECRET="x", EFPS_RANK="0", EFPS_NUM_WORKERS="1",
                     EFPS_BLOCK="-3")
check("malformed EFPS_BLOCK fails", rc == 1 and "EFPS_BLOCK" in checks(doc)["config"]["detail"],
      str(checks(doc)))

# Bad arguments: exit 2, one line.
for args in (["--params", "0"], ["--model-bytes", "x"], ["--bogus"], ["extra"]):
    rc, out, err = run(*args)
    check("bad arguments %s exit 2" % args, rc == 2 and out == "" and
          err.count("\n") == 1 and "see --help" in err, "exit %d %r" % (rc, err))
rc, out, _ = run("--help")
check("--help", rc == 0 and out.startswith("usage: efps-info"))

if failures:
    print("info_test: %d FAILED" % len(failures))
    sys.exit(1)
print("info_test: all passed")
