"""Start every worker from rank 0's parameters; optional averaging of buffers.

Through torch.distributed.broadcast when a process group is initialised (any
backend); otherwise through torch's TCPStore, a key-value store that needs
no process group and no gloo: rank 0 serves it on MASTER_ADDR:MASTER_PORT
(python3 -m efps.run sets them; under torchrun the agent's store already
listens there and every rank joins it as a client). The values travel as
their raw bytes, so every rank ends bit-identical to rank 0.

efps itself is not used for this: its servers reduce (mean, then the
compressor), which cannot reproduce rank 0's float bits for every M.
"""
import datetime
import io
import os
import pickle

import torch
import torch.distributed as dist

_store = None
_seq = [0]


def _env_int(*names):
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            return int(v), n
    return None, None


def rank_and_size():
    """This worker's rank and the number of workers, resolved as lib/ps does
    for a worker: EFPS_RANK / EFPS_NUM_WORKERS, then mpirun, Slurm, torchrun."""
    rank, _ = _env_int("EFPS_RANK")
    size, _ = _env_int("EFPS_NUM_WORKERS")
    for r, s in (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"),
                 ("RANK", "WORLD_SIZE")):
        if os.environ.get(r) and os.environ.get(s):
            rank = int(os.environ[r]) if rank is None else rank
            size = int(os.environ[s]) if size is None else size
            break
    if rank is None or size is None:
        raise RuntimeError("efps: rank unknown: set EFPS_RANK and EFPS_NUM_WORKERS or start "
                           "under python3 -m efps.run, torchrun, mpirun or srun")
    return rank, size


def _timeout():
    ms, _ = _env_int("EFPS_TIMEOUT_MS")
    return datetime.timedelta(milliseconds=max(ms or 30000, 60000))


def _get_store(rank, size):
    global _store
    if _store is not None:
        return _store
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        raise RuntimeError("efps: broadcast needs MASTER_ADDR and MASTER_PORT (python3 -m "
                           "efps.run and torchrun set them) or an initialised torch.distributed")
    if rank == 0:
        try:
            _store = dist.TCPStore(addr, int(port), size, True, _timeout(),
                                   wait_for_workers=False)
            return _store
        except RuntimeError:
            pass  # the port is taken: torchrun's agent serves a store there
    _store = dist.TCPStore(addr, int(port), size, False, _timeout())
    return _store


def _exchange(tensors, root_only, rank, size):
    """root_only: every rank gets rank 0's tensors. Else: every rank gets the
    list of every rank's tensors (rank order)."""
    store = _get_store(rank, size)
    _seq[0] += 1
    tag = "efps/bcast/%d" % _seq[0]
    buf = io.BytesIO()
    if rank == 0 or not root_only:
        torch.save([t.detach().cpu() for t in tensors], buf)
        store.set("%s/%d" % (tag, rank), buf.getvalue())
    if root_only:
        if rank == 0:
            store.wait(["%s/ack/%d" % (tag, r) for r in range(1, size)])
            return [list(tensors)]
        got = torch.load(io.BytesIO(store.get("%s/0" % tag)))
        store.set("%s/ack/%d" % (tag, rank), b"1")
        return [got]
    out = [torch.load(io.BytesIO(store.get("%s/%d" % (tag, r)))) for r in range(size)]
    store.set("%s/ack/%d" % (tag, rank), b"1")
    if rank == 0:  # the store lives in rank 0: it must not go before everyone has read
        store.wait(["%s/ack/%d" % (tag, r) for r in range(1, size)])
    return out


def _targets(model, buffers):
    ts = [p for _, p in sorted(model.named_parameters(), key=lambda t: t[0])]
    if buffers:
        ts += [b for _, b in sorted(model.named_buffers(), key=lambda t: t[0])]
    return ts


@torch.no_grad()
def broadcast_parameters(model, buffers=True):
    """Sets every parameter (and, with buffers=True, every buffer: BN running
    statistics) of model to rank 0's values. Call it on every rank, after the
    model is built and before the optimizer's first step."""
    ts = _targets(model, buffers)
    if dist.is_available() and dist.is_initialized():
        for t in ts:
            dist.broadcast(t, 0)
        return
    rank, size = rank_and_size()
    if size == 1:
        return
    got = _exchange(ts, True, rank, size)[0]
    if rank != 0:
        for t, v in zip(ts, got):
            if t.shape != v.shape:
                raise RuntimeError("efps: broadcast_parameters: rank 0 has another model (a "
                                   "tensor of shape %s here is %s there)" %
                                   (tuple(t.shape), tuple(v.shape)))
            t.copy_(v)


@torch.no_grad()
def average_buffers(model):
    """Averages the floating-point buffers (BN running mean and variance)
    over the workers; integer buffers (num_batches_tracked) take rank 0's.
    Buffers are local by default (each worker's BN statistics follow its own
    data, as DDP with broadcast_buffers=False); call this e.g. before evaluating."""
    bufs = [b for _, b in sorted(model.named_buffers(), key=lambda t: t[0])]
    if dist.is_available() and dist.is_initialized():
        size = dist.get_world_size()
        for b in bufs:
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(size)
            else:
                dist.broadcast(b, 0)
        return
    rank, size = rank_and_size()
    if size == 1:
        return
    every = _exchange(bufs, False, rank, size)
    for i, b in enumerate(bufs):
        if b.is_floating_point():
            acc = every[0][i].clone()
            for r in range(1, size):  # rank order: every rank gets the same bits
                acc += every[r][i]
            b.copy_(acc / size)
        else:
            b.copy_(every[0][i])


def can_exchange():
    return (dist.is_available() and dist.is_initialized()) or bool(
        os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"))


def all_gather_object(obj, rank, size):
    """Every rank's obj, in rank order (small, picklable objects)."""
    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    store = _get_store(rank, size)
    _seq[0] += 1
    tag = "efps/gather/%d" % _seq[0]
    store.set("%s/%d" % (tag, rank), pickle.dumps(obj))
    out = [pickle.loads(store.get("%s/%d" % (tag, r))) for r in range(size)]
    store.set("%s/ack/%d" % (tag, rank), b"1")
    if rank == 0:
        store.wait(["%s/ack/%d" % (tag, r) for r in range(1, size)])
    return out


def check_same_parameters(named, rank, size):
    """Raises ValueError naming the parameters that are not declared alike on
    every rank (name, shape); every rank raises. Done through the store before
    anything is sent to the servers, whose own layout check can only name
    keys; skipped when no store or process group is available."""
    if size == 1 or not can_exchange():
        return
    mine = sorted((n, tuple(p.shape)) for n, p in named)
    every = all_gather_object(mine, rank, size)
    ref = dict(every[0])
    problems = []
    for r, theirs in enumerate(every[1:], 1):
        d = dict(theirs)
        for n in sorted(set(ref) | set(d)):
            if n not in d:
                problems.append("parameter %r is on rank 0 but not on rank %d" % (n, r))
            elif n not in ref:
                problems.append("parameter %r is on rank %d but not on rank 0" % (n, r))
            elif ref[n] != d[n]:
                problems.append("parameter %r has shape %s on rank 0, %s on rank %d" %
                                (n, ref[n], d[n], r))
    if problems:
        raise ValueError("efps: the ranks declare different parameters: " +
                         "; ".join(problems[:10]))
