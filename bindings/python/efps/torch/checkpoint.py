"""efps.torch.save / efps.torch.load: a job's checkpoint, resumed bit-identically.

    efps.torch.save(path, model, opt, scheduler)   # every rank, between steps
    efps.torch.load(path, model, opt, scheduler)   # every rank, after building the
                                                   # optimizer, before the first backward
Files: <path>.rank<r>.pt (torch.save of the model's, the optimizer's and the
scheduler's state_dicts: parameters, the rank's own BN buffers, lr, step count),
<path>.worker<r> (this worker's efps optimizer state: momentum, error feedback,
weight-decay momentum, from libefps) and, written by the servers at rank 0's
request, <path>.server<s> (each server's error feedback). A worker's data
order is the script's to restore (e.g. skip the batches of the steps done).
"""
import torch


def _file(path, rank):
    return "%s.rank%d.pt" % (path, rank)


def save(path, model, optimizer, scheduler=None):
    optimizer.synchronize()
    optimizer._ps.save(path)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict()},
               _file(path, optimizer.rank))


def load(path, model, optimizer, scheduler=None):
    state = torch.load(_file(path, optimizer.rank))
    with torch.no_grad():  # in place: the optimizer writes the parameters' own memory
        model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    optimizer._ps.load(path)
