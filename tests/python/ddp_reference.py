"""The independent implementation: torch DDP (gloo) + torch.optim.SGD(momentum,
nesterov, weight_decay) on worker.py's model, data and schedule. argv[1] is
worker.py's JSON settings; RANK/WORLD_SIZE/MASTER_* come from the test."""
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import worker  # noqa: E402  (make_model, batches, make_scheduler, save_params)

torch.set_num_threads(1)


def main():
    cfg = json.loads(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = worker.make_model(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.get("lr", 0.05),
                          momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", True),
                          weight_decay=cfg.get("wd", 0.0))
    sched = worker.make_scheduler(cfg, opt)
    for x, y in worker.batches(cfg, rank):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()
    worker.save_params(model, os.path.join(cfg["out"], "final.%d.pt" % rank))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
