"""train_resnet.py --workers N: runs N copies of the script on this
machine. For --dist ddp it starts them itself with torchrun's variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); for --dist efps it
hands over to `python3 -m efps.run --workers N --servers S`, which also
starts the parameter servers, with MASTER_ADDR/MASTER_PORT set for the
metrics group. Signals are forwarded; the first child that fails is named
and the others are stopped."""
import os
import resource
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_launch_args(argv):
    """argv without --workers N / --servers S (either form)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--workers", "--servers"):
            skip = True
        elif not a.startswith(("--workers=", "--servers=")):
            out.append(a)
    return out


def describe(code):
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def run_children(cmds, envs):
    """Starts every command, forwards SIGINT/SIGTERM, waits. Returns 0, or
    the exit code of the first child that failed (after stopping the
    others), having said which one it was."""
    procs = [subprocess.Popen(c, env=e) for c, e in zip(cmds, envs)]

    def forward(sig, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    failed = None
    while failed is None and any(p.poll() is None for p in procs):
        for r, p in enumerate(procs):
            if p.poll() not in (None, 0):
                failed = r
                break
        time.sleep(0.1)
    if failed is None:
        failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
    if failed is None:
        return 0
    code = procs[failed].returncode
    print(f"train_resnet: worker {failed} failed ({describe(code)}); stopping the others",
          file=sys.stderr)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return code if code > 0 else 1


def report_cpu():
    """CPU seconds used by every process of the job (they have all been
    waited for, so their usage has reached us): a cost figure that other
    jobs on the machine do not inflate the way they inflate wall time."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"train_resnet: job cpu_s {ru.ru_utime + ru.ru_stime:.1f} (user {ru.ru_utime:.1f}, "
          f"sys {ru.ru_stime:.1f}, all processes)", flush=True)


def launch(args, script, argv):
    rest = strip_launch_args(argv)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               OMP_NUM_THREADS="1")
    if args.dist == "ddp":
        cmds, envs = [], []
        for r in range(args.workers):
            envs.append(dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(args.workers),
                             LOCAL_WORLD_SIZE=str(args.workers)))
            cmds.append([sys.executable, script] + rest)
        rc = run_children(cmds, envs)
    else:
        # the servers' compressor and block must be the optimizer's
        cmd = [sys.executable, "-m", "efps.run", "--workers", str(args.workers),
               "--servers", str(args.servers), "--compressor", args.compressor,
               "--block", str(args.block), script] + rest
        rc = run_children([cmd], [env])
    if rc == 0:
        report_cpu()
    return rc
