#!/usr/bin/env python3
"""Hostile clients against a real efps-server on 127.0.0.1 (issue 10).
usage: hostile.py CASE   (BUILD=<build dir> in the environment)
Each case exits 0 when the server held up, 1 (with the logs) when not."""
import os
import re
import resource
import secrets
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import efpsclient as ec  # noqa: E402

BUILD = os.environ["BUILD"]
SERVER = os.path.join(BUILD, "apps/efps-server/efps-server")
WORKER = os.path.join(BUILD, "tests/integration/ps/ps_lsq")
TMP = tempfile.mkdtemp(prefix="efps-hostile.")
SECRET = secrets.token_hex(32)
BLOCK = 256
# A small real job: ps_lsq's layout for these arguments.
JOB = ["--steps", os.environ.get("STEPS", "10"), "--dim", "1024", "--keys", "2", "--lr", "1e-4"]
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("EFPS_")}
BASE_ENV.update(EFPS_SECRET=SECRET, EFPS_TRANSPORT="tcp", EFPS_COMPRESSOR="blocksign",
                EFPS_BLOCK=str(BLOCK), EFPS_PARTITION_BYTES="4096", EFPS_TIMEOUT_MS="8000")
procs = []
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def start_server(workers, **env):
    log = os.path.join(TMP, "server.%d.log" % len(procs))
    port_file = os.path.join(TMP, "port.%d" % len(procs))
    e = dict(BASE_ENV, EFPS_SERVERS="127.0.0.1:0", EFPS_NUM_WORKERS=str(workers))
    e.update(env)
    e = {k: v for k, v in e.items() if v is not None}  # None: leave the default
    p = subprocess.Popen([SERVER, "--rank", "0", "--bind", "127.0.0.1:0", "--port-file",
                          port_file], env=e, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    procs.append((p, log))
    for _ in range(200):
        if os.path.exists(port_file) and open(port_file).read().strip():
            return p, int(open(port_file).read()), log
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("efps-server did not start:\n" + open(log).read())


def start_worker(port, rank, workers, **env):
    log = os.path.join(TMP, "worker.%d.%d.log" % (rank, len(procs)))
    e = dict(BASE_ENV, EFPS_SERVERS="127.0.0.1:%d" % port, EFPS_ROLE="worker",
             EFPS_RANK=str(rank), EFPS_NUM_WORKERS=str(workers))
    e.update(env)
    p = subprocess.Popen([WORKER, "--out", os.path.join(TMP, "x.%d" % rank)] + JOB, env=e,
                         stdout=open(log, "w"), stderr=subprocess.STDOUT)
    procs.append((p, log))
    return p, log


def wait(p, seconds):
    try:
        return p.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def real_job(port, workers, what):
    ws = [start_worker(port, r, workers) for r in range(workers)]
    for r, (p, _) in enumerate(ws):
        check(wait(p, 60) == 0, "%s: worker %d exits 0" % (what, r))


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def refusal(c, msgs):
    """Sends msgs on c; the REFUSE reason that comes back, or what happened instead."""
    try:
        for m in msgs:
            c.send_msg(m)
        while True:
            c.recv_msg()
    except ec.Refused as e:
        return str(e)
    except (EOFError, OSError) as e:
        return "no REFUSE: %r" % e


# ---- item 1: every number of LAYOUT and KEYS is bounded --------------------------------
def case_layout():
    srv, port, log = start_server(1)
    comp = ec.COMP["blocksign"]
    huge = (1 << 60) - 1
    bad = [
        ("partition_bytes 0 with 256 keys of 2^60-1 elements (the heap overflow)",
         [ec.layout_head(comp, BLOCK, 0, 256)] +
         [ec.keys_msg([(k + 128 * i, huge, 0) for k in range(128)]) for i in range(2)],
         "partition_bytes"),
        ("keys of 2^60-1 elements", [ec.layout_head(comp, BLOCK, 4096, 256)] +
         [ec.keys_msg([(k, huge, 0) for k in range(128)])], "key n"),
        ("2^24 keys announced", [ec.layout_head(comp, BLOCK, 4096, 1 << 24)], "nkeys"),
        ("more keys than announced", [ec.layout_head(comp, BLOCK, 4096, 1),
                                      ec.keys_msg([(1, 10, 0), (2, 10, 0)])], "keys received"),
        ("a KEYS count that does not match its length",
         [ec.layout_head(comp, BLOCK, 4096, 4), struct.pack("<II", ec.MSG_KEYS, 100)], "KEYS"),
        ("256 keys of 2^40 elements in parts of 64 bytes",
         [ec.layout_head(comp, BLOCK, 64, 256)] +
         [ec.keys_msg([(k + 128 * i, 1 << 40, 0) for k in range(128)]) for i in range(2)],
         "parts"),
        ("one key of 2^28 elements in parts of 64 bytes (2^24 parts, ~940 MB of bookkeeping)",
         [ec.layout_head(comp, 0, 64, 1), ec.keys_msg([(1, 1 << 28, 0)])], "partition bytes 64"),
        ("a key declared twice", [ec.layout_head(comp, BLOCK, 4096, 2),
                                  ec.keys_msg([(5, 10, 0), (5, 10, 0)])], "twice"),
    ]
    for what, msgs, field in bad:
        c = ec.login(port, SECRET, 0, 1)
        why = refusal(c, msgs)
        check(field in why, "%s: refused naming %r (%s)" % (what, field, why))
        c.close()
        check(srv.poll() is None, "server still serving after: " + what)
    real_job(port, 1, "after every bad layout")
    check(wait(srv, 20) == 0, "server exits 0 after the real job")


# ---- item 2: no secret, no start; default address is this server's entry -----------
def case_secure_default():
    e = dict(BASE_ENV, EFPS_SERVERS="127.0.0.1:0", EFPS_NUM_WORKERS="1")
    del e["EFPS_SECRET"]
    r = subprocess.run([SERVER, "--rank", "0"], env=e, capture_output=True, text=True,
                       timeout=20)
    check(r.returncode != 0 and "EFPS_SECRET" in r.stderr and "openssl rand" in r.stderr,
          "server without a secret refuses to start, saying how to make one")
    w = dict(e, EFPS_ROLE="worker", EFPS_RANK="0")
    r = subprocess.run([WORKER, "--out", os.path.join(TMP, "x")] + JOB, env=w,
                       capture_output=True, text=True, timeout=20)
    check(r.returncode != 0 and "EFPS_SECRET" in r.stderr, "worker without a secret refuses")
    # EFPS_INSECURE=1: runs, loudly; an empty-key HMAC is then what it takes.
    srv, port, log = start_server(1, EFPS_SECRET="", EFPS_INSECURE="1")
    check("INSECURE" in open(log).read(), "an insecure server warns loudly")
    c = ec.login(port, "", 0, 1)
    c.close()
    srv.kill()
    # A server with a secret does not take an HMAC over the empty key.
    srv, port, log = start_server(1)
    c = ec.Conn(port)
    mine = ec.hello(0, 1)
    theirs = c.connect(mine)
    why = refusal(c, [struct.pack("<I", ec.MSG_AUTH) + ec.mac("", "efps worker", mine, theirs)])
    check("wrong secret" in why, "an HMAC over the empty key is refused (%s)" % why)
    srv.kill()
    # No --bind: the address of its EFPS_SERVERS entry, not every interface.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    e = dict(BASE_ENV, EFPS_SERVERS="127.0.0.7:%d" % port, EFPS_NUM_WORKERS="1")
    p = subprocess.Popen([SERVER, "--rank", "0"], env=e, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    procs.append((p, os.devnull))
    listening = None
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.7", port), 1).close()
            listening = True
            break
        except OSError:
            time.sleep(0.05)
    check(listening is True, "listens on 127.0.0.7, its entry in EFPS_SERVERS")
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        other = True
    except OSError:
        other = False
    check(not other, "does not listen on 127.0.0.1 (not every interface)")
    p.kill()


# ---- item 3: login deadline, caps, refused peers closed ------------------------------
def case_admission():
    srv, port, log = start_server(1, EFPS_LOGIN_TIMEOUT_MS="1000", EFPS_MAX_PENDING="8",
                                  EFPS_MAX_PENDING_PER_HOST="4")
    time.sleep(0.3)
    base = fds(srv.pid)
    idle = []
    for _ in range(4):
        c = ec.Conn(port)
        c.connect(ec.hello(0, 1))
        idle.append(c)
    extra = ec.Conn(port)
    try:
        extra.connect(ec.hello(0, 1))
        rejected = False
    except (ec.Refused, EOFError, OSError):
        rejected = True
    check(rejected, "a 5th unauthenticated connection from one address is rejected at once")
    other = ec.Conn(port, src="127.0.0.2")
    other.connect(ec.hello(0, 1))
    check(True, "one from another address is accepted")
    t0 = time.time()
    closed = all(c.wait_closed(3.0) for c in idle + [other])
    check(closed and time.time() - t0 < 3.0,
          "idle connections are closed at the login deadline (%.1f s)" % (time.time() - t0))
    # Wrong AUTH, then full-size messages without end: closed all the same.
    talker = ec.Conn(port)
    mine = ec.hello(0, 1)
    theirs = talker.connect(mine)
    talker.send_msg(struct.pack("<I", ec.MSG_AUTH) + b"x" * 32)
    t0, gone = time.time(), False
    talker.s.settimeout(0.05)
    while time.time() - t0 < 3.0 and not gone:
        try:
            talker.send_msg(b"\x07" * 4096)
        except socket.timeout:
            pass
        except OSError:
            gone = True
        try:
            if talker.s.recv(65536) == b"":
                gone = True
        except socket.timeout:
            pass
        except OSError:
            gone = True
    check(gone, "a refused client that keeps talking is closed (%.1f s)" % (time.time() - t0))
    for c in idle + [extra, other, talker]:
        c.close()
    time.sleep(0.5)
    check(fds(srv.pid) <= base, "descriptors back to baseline (%d, was %d)" % (fds(srv.pid), base))
    real_job(port, 1, "after strangers")
    check(wait(srv, 20) == 0, "server exits 0")


# ---- item 4: a region key works only on its own connection -------------------------
def case_foreign_key():
    srv, port, log = start_server(1)
    owner = ec.login(port, SECRET, 0, 1)
    owner.send_msg(ec.layout_head(ec.COMP["blocksign"], BLOCK, 4096, 1))
    owner.send_msg(ec.keys_msg([(100, 1024, BLOCK)]))
    t, body = owner.recv_msg()
    check(t == ec.MSG_READY, "the owner got its slot key")
    rk = ec.unpack_rkey(body)
    thief = ec.Conn(port)
    thief.connect(ec.hello(0, 1))
    thief.frame(ec.F_WRITE, b"\0" * 64, imm=0, region=rk["key"], secret=rk["base"], offset=0)
    check(thief.wait_closed(3.0), "a write with another connection's key drops the writer")
    time.sleep(0.3)
    check(srv.poll() is None, "the run goes on (server still up)")
    owner.send_msg(struct.pack("<I", ec.MSG_BYE))
    try:
        t, _ = owner.recv_msg()
    except (EOFError, ec.Refused, OSError) as e:
        t = repr(e)
    check(t == ec.MSG_BYE, "the owner is still served (BYE answered: %r)" % (t,))
    owner.close()
    check(wait(srv, 20) == 0, "server exits 0, blaming nobody")


# ---- issue 10 leftover: checkpoint names stay inside the server's EFPS_CKPT_DIR ----
def case_ckpt():
    ckdir = os.path.join(TMP, "ckdir")
    os.mkdir(ckdir)
    srv, port, log = start_server(1, EFPS_CKPT_DIR=ckdir)
    c = ec.login(port, SECRET, 0, 1)
    c.send_msg(ec.layout_head(ec.COMP["blocksign"], BLOCK, 4096, 1))
    c.send_msg(ec.keys_msg([(100, 1024, BLOCK)]))
    t, _ = c.recv_msg()
    check(t == ec.MSG_READY, "joined")

    def save(name):
        c.send_msg(struct.pack("<I", 16) + name.encode() + b"\0")  # PS_MSG_SAVE
        t, body = c.recv_msg()
        status = struct.unpack("<i", body[:4])[0] if t == 18 else None
        return status, body[4:].rstrip(b"\0").decode(errors="replace")

    outside = os.path.join(TMP, "outside")
    for name in [outside, "../outside", "..", "sub/x"]:
        status, why = save(name)
        check(status not in (None, 0) and "plain file name" in why and "EFPS_CKPT_DIR" in why,
              "SAVE %r refused naming the rule (%s)" % (name, why))
    check(not any(f.startswith("outside") for f in os.listdir(TMP)),
          "nothing written outside the checkpoint directory")
    status, why = save("ck")
    check(status == 0 and os.path.exists(os.path.join(ckdir, "ck.server0")),
          "SAVE 'ck' writes ck.server0 in EFPS_CKPT_DIR (%s)" % why)
    check(srv.poll() is None, "the server keeps serving")
    c.send_msg(struct.pack("<I", ec.MSG_BYE))
    c.recv_msg()
    c.close()
    check(wait(srv, 20) == 0, "server exits 0")


# ---- item 8: logs about strangers are rate-limited and name the address ------------
def case_logs():
    srv, port, log = start_server(1, EFPS_MAX_PENDING_PER_HOST="1000", EFPS_MAX_PENDING="1000")
    for i in range(200):
        c = ec.Conn(port)
        mine = ec.hello(0, 1)
        theirs = c.connect(mine)
        why = refusal(c, [struct.pack("<I", ec.MSG_AUTH) +
                          ec.mac("wrong", "efps worker", mine, theirs)])
        c.close()
        if "wrong secret" not in why:
            check(False, "stranger %d refused for its secret (%s)" % (i, why))
    time.sleep(1.5)
    real_job(port, 1, "after 200 wrong secrets")
    wait(srv, 20)
    lines = [x for x in open(log) if "refused" in x]
    check(0 < len(lines) <= 10, "200 refusals make %d log lines (at most 10)" % len(lines))
    check(all("127.0.0.1" in x and "worker 0" not in x for x in lines),
          "they name the address, not the rank claimed")
    held = [x for x in open(log) if "held back" in x]
    total = len(lines) + sum(int(re.search(r"(\d+) more (lines|such)", x).group(1)) for x in held)
    check(total == 200, "and count what was held back: %d refusals accounted for" % total)


# ---- item 8: efps-perf's servers take EFPS_SECRET, never a fixed one --------------
# Before the fix every efps-perf run used the secret "efps-perf", so anyone who
# reached its servers' ports could join them.
def perf_server_port(perf):
    """The tcp port a server forked by efps-perf listens on, once it does."""
    for _ in range(400):
        kids = set()
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and int(open("/proc/%s/stat" % d).read().rsplit(")", 1)[1]
                                       .split()[1]) == perf.pid:
                    kids.add(int(d))
            except (OSError, IndexError, ValueError):
                pass
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"127\.0\.0\.1:(\d+).*pid=(\d+)", line)
            if m and int(m.group(2)) in kids:
                return int(m.group(1))
        if perf.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("no efps-perf server found listening")


def auth_answer(port, secret):
    """What the server answers an AUTH made with secret: 'accepted' or the refusal."""
    try:
        ec.login(port, secret, 0, 1).close()
        return "accepted"
    except ec.Refused as e:
        return str(e)
    except (AssertionError, EOFError, OSError) as e:
        return "no answer: %r" % e


def case_perf_secret():
    perf = os.path.join(BUILD, "apps/efps-perf/efps-perf")
    for given in (None, secrets.token_hex(32)):
        e = {k: v for k, v in BASE_ENV.items() if k != "EFPS_SECRET"}
        if given:
            e["EFPS_SECRET"] = given
        log = os.path.join(TMP, "perf.%d.log" % len(procs))
        p = subprocess.Popen([perf, "-s", str(64 << 20), "-n", "200", "-r", "1", "--no-raw"],
                             env=e, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                             start_new_session=True)  # its forked servers go with it
        procs.append((p, log))
        port = perf_server_port(p)
        what = "EFPS_SECRET given" if given else "no EFPS_SECRET"
        why = auth_answer(port, "efps-perf")
        check("wrong secret" in why, "%s: the old fixed secret is refused (%s)" % (what, why))
        if given:
            why = auth_answer(port, given)
            check("wrong secret" not in why, "%s: EFPS_SECRET passes AUTH (%s)" % (what, why))
        os.killpg(p.pid, 9)
        p.wait()


# ---- load: 1,500 idle and 1,500 refused-but-talking strangers during a real job ----
# Idle: half never send a byte (the transport's handshake deadline), half send
# the transport hello and then nothing (the server's login deadline).
# Talking: hello, a wrong AUTH, then full-size messages as fast as they go.
def case_load():
    n_idle, n_talk = int(os.environ.get("IDLE", 1500)), int(os.environ.get("TALK", 1500))
    need = n_idle + n_talk + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
    login_ms = 3000
    # The server's login deadline bounds both halves: the transport drops a
    # connection that never sends its hello after it (the silent half), the
    # server one that never logs in (the idle half). EFPS_TIMEOUT_MS stays at
    # its default (30 s), far beyond the deadline this test asserts.
    srv, port, log = start_server(4, EFPS_LOGIN_TIMEOUT_MS=str(login_ms), EFPS_TIMEOUT_MS=None)
    time.sleep(0.3)
    base = fds(srv.pid)
    sel = selectors.DefaultSelector()
    socks = []
    hello = ec.hello(0, 4)
    frame = lambda t, m: ec.HDR.pack(ec.T_MAGIC, 1, t, 0, len(m), 0, 0, 0, 0, 0) + m
    connect = frame(ec.F_CONNECT, hello)
    auth = frame(ec.F_MSG, struct.pack("<I", ec.MSG_AUTH) + b"x" * 32)
    junk = frame(ec.F_MSG, b"\x07" * 4000)
    closed = [0]
    held = [0.0]  # the longest a stranger stayed connected

    def open_one(i, kind):
        s = socket.socket()
        s.setblocking(False)
        s.bind(("127.0.%d.%d" % (1 + i // 250, 1 + i % 250), 0))
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, [kind, 0, None])

    def pump(seconds):
        end = time.time() + seconds
        while time.time() < end:
            for key, ev in sel.select(0.05):
                s, st = key.fileobj, key.data
                try:
                    if ev & selectors.EVENT_READ and s.recv(65536) == b"":
                        raise OSError("closed")
                    if not ev & selectors.EVENT_WRITE:
                        continue
                    if st[2] is None:
                        st[2] = time.time()  # connected (late ones wait out a SYN retry)
                    if st[0] == "silent" or (st[0] == "idle" and st[1] > 0):
                        sel.modify(s, selectors.EVENT_READ, st)
                    elif st[1] == 0:
                        s.send(connect)
                    elif st[1] == 1:
                        s.send(auth)
                    else:
                        s.send(junk)
                    st[1] += 1
                except OSError:
                    sel.unregister(s)
                    s.close()
                    closed[0] += 1
                    if st[2] is not None:
                        held[0] = max(held[0], time.time() - st[2])
            yield

    # In batches the kernel's accept queue (128) takes at once: a connection
    # it drops would only reach the server seconds later, after SYN retries.
    kinds = ["silent" if i % 2 else "idle" for i in range(n_idle)] + ["talk"] * n_talk
    for i, kind in enumerate(kinds):
        open_one(i, kind)
        if i % 100 == 99:
            for _ in pump(0.03):
                pass
    t_open = time.time()
    peak = [0, 0]

    def watch():
        peak[0] = max(peak[0], rss_kb(srv.pid))
        peak[1] = max(peak[1], fds(srv.pid))

    for _ in pump(1.0):  # the strangers first
        watch()
    # Three workers join now; the server waits for the fourth (up to the
    # default EFPS_TIMEOUT_MS, 30 s) and meanwhile must have closed every
    # stranger within the login deadline (+ 2 s of slack for the timer ticks
    # and a loaded machine), whatever EFPS_TIMEOUT_MS is.
    workers = [start_worker(port, r, 4, EFPS_TIMEOUT_MS="20000") for r in range(3)]
    slack = login_ms / 1000 + 2
    for _ in pump(t_open + slack - time.time()):
        watch()
    n_at = fds(srv.pid)
    n_closed = closed[0]
    check(srv.poll() is None, "the server waits for its last worker")
    check(n_closed == len(socks), "the server closed all %d strangers within %.1f s (%d)"
          % (len(socks), slack, n_closed))
    check(held[0] <= slack, "each within %.1f s of its connect (the longest stayed %.1f s; "
          "login deadline %d ms, EFPS_TIMEOUT_MS default)" % (slack, held[0], login_ms))
    check(n_at <= base + 3, "server descriptors back to baseline + 3 workers (%d, baseline %d)"
          % (n_at, base))
    # A second wave of strangers, the same mix; the run itself goes on among them.
    for i, kind in enumerate(kinds):
        open_one(len(kinds) + i, kind)
        if i % 100 == 99:
            for _ in pump(0.03):
                pass
    workers.append(start_worker(port, 3, 4, EFPS_TIMEOUT_MS="20000"))
    t0 = time.time()
    for _ in pump(40):
        watch()
        if all(p.poll() is not None for p, _ in workers):
            break
    print("real job done in %.1f s; %d of %d strangers closed by then; server peak %d kB, %d fds"
          % (time.time() - t0, closed[0], len(socks), peak[0], peak[1]))
    for r, (p, _) in enumerate(workers):
        check(wait(p, 30) == 0, "worker %d of the real job exits 0 among the strangers" % r)
    check(peak[0] < 64 * 1024, "server RSS stays under 64 MB (peak %d kB)" % peak[0])
    check(wait(srv, 30) == 0, "server exits 0")
    for s in socks:
        s.close()


CASES = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.exit("usage: hostile.py {%s}" % "|".join(CASES))
    try:
        CASES[sys.argv[1]]()
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
    if failures:
        for _, log in procs:
            if log != os.devnull:
                print("--- " + log + "\n" + open(log).read())
        sys.exit(1)
    shutil.rmtree(TMP, ignore_errors=True)  # kept when a case failed, for its logs
    print("OK: " + sys.argv[1])
