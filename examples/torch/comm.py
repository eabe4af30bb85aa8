"""How gradients travel: efps (efps.torch.DistributedOptimizer over the
parameter server) or torch's DistributedDataParallel over gloo, with or
without a communication hook. Both give the training loop the same things:
the model to call, an optimizer to step, this rank and the world size, a
small gloo group for the per-epoch metrics, and the bytes this rank put on
the wire.

Bytes on the wire, per rank, cumulative:
- efps: counted by the binding (opt.stats(): the bytes this worker pushed,
  message headers included), times two for the pulls, which are the same
  size.
- DDP: computed. gloo's all-reduce of a CPU tensor is a ring (reduce-scatter
  then all-gather), in which each of M ranks sends 2(M-1)/M times the
  tensor's bytes. With no hook, DDP all-reduces every gradient once per step
  in fp32; with a hook, every all-reduce the hook issues is counted as it is
  issued (fp16: half the bytes; PowerSGD: its P and Q matrices plus the
  tensors it leaves uncompressed, and its first plain fp32 step). TCP/IP
  headers are not counted (perf/torch_compare.sh measures those too).
"""
import os

import torch
import torch.distributed as dist

_ring_bytes = [0]  # hooks' all-reduce bytes on the WORLD group, this rank


def _env_int(names, what):
    for n in names:
        if os.environ.get(n, "") != "":
            return int(os.environ[n])
    raise RuntimeError(f"cannot tell the {what}: none of {', '.join(names)} is set "
                       "(launch with --workers N, torchrun, or python3 -m efps.run)")


def _count_world_all_reduce():
    """Wraps dist.all_reduce so every all-reduce on the default group (what
    DDP's comm hooks use) adds its ring bytes to _ring_bytes. The metrics
    group is a separate group and is not counted."""
    if getattr(dist.all_reduce, "_efps_counting", False):
        return
    inner = dist.all_reduce

    def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        if group is None or group is dist.group.WORLD:
            m = dist.get_world_size()
            _ring_bytes[0] += 2 * (m - 1) * tensor.numel() * tensor.element_size() // m
        return inner(tensor, op=op, group=group, async_op=async_op)

    all_reduce._efps_counting = True
    dist.all_reduce = all_reduce


def _one_bucket_at_a_time(hook):
    """PowerSGD issues its second and third all-reduce of a bucket from the
    completion callback of the previous one. On gloo those callbacks run on
    gloo's threads as transfers finish, so with two buckets in flight the
    ranks can issue them in different orders, and gloo then fails ("enforce
    fail at pair.cc: op.preamble.length <= op.nbytes", seen here with
    ResNet-18). Starting a bucket only when the previous one is done keeps
    the order the same on every rank (it costs the overlap between buckets)."""
    prev = [None]

    def serial(state, bucket):
        if prev[0] is not None:
            prev[0].wait()
        prev[0] = hook(state, bucket)
        return prev[0]

    return serial


def _ring_fp32_bytes(params, m):
    return 2 * (m - 1) * sum(4 * p.numel() for p in params if p.requires_grad) // m


class Ddp:
    """torch.nn.parallel.DistributedDataParallel + torch.optim.SGD."""

    def __init__(self, args, model):
        from torch.nn.parallel import DistributedDataParallel as DDP
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

        dist.init_process_group("gloo", init_method="env://")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.metrics_group = dist.new_group(backend="gloo")
        # BN statistics stay local during training, as with efps (train_resnet
        # averages them before each evaluation, the same way for both).
        self.model = DDP(model, broadcast_buffers=False)
        self.opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                   nesterov=args.nesterov, weight_decay=args.weight_decay)
        self.step_fp32 = _ring_fp32_bytes(model.parameters(), self.world)
        self.hook = args.ddp_hook
        self.steps = 0
        if self.hook == "fp16":
            self.model.register_comm_hook(None, default_hooks.fp16_compress_hook)
        elif self.hook == "powersgd":
            # start_powerSGD_iter = 2: compress from the second step on (the
            # least torch allows with error feedback), as efps compresses from
            # the first; torch's default of 1000 would be plain fp32 here.
            self.psgd = powerSGD_hook.PowerSGDState(
                process_group=None, matrix_approximation_rank=args.powersgd_rank,
                start_powerSGD_iter=args.powersgd_start, use_error_feedback=True,
                warm_start=True, random_seed=args.seed)
            self.model.register_comm_hook(self.psgd, _one_bucket_at_a_time(powerSGD_hook.powerSGD_hook))
        if self.hook != "none":
            _count_world_all_reduce()
        self.label = "ddp" if self.hook == "none" else f"ddp-{self.hook}"
        if self.hook == "powersgd":
            self.label += f"{args.powersgd_rank}"
        self.wire_method = "computed"

    def after_step(self):
        self.steps += 1

    def wire_bytes(self):
        if self.hook == "none":
            return self.steps * self.step_fp32
        return _ring_bytes[0]

    def fp32_bytes(self):
        return self.steps * self.step_fp32

    def before_eval(self):
        pass

    def stats(self, servers=False):
        return {}

    def finish(self):
        dist.barrier(self.metrics_group)
        dist.destroy_process_group()


class Efps:
    """efps.torch.DistributedOptimizer over efps's parameter server. A gloo
    group, when MASTER_ADDR/MASTER_PORT are set (python3 -m efps.run and
    torchrun set them), carries the start-up broadcast of rank 0's
    parameters and the per-epoch metrics; gradients go through efps only."""

    def __init__(self, args, model):
        import efps.torch as et

        self.rank = _env_int(("EFPS_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "RANK"),
                             "worker rank")
        self.world = _env_int(("EFPS_NUM_WORKERS", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "WORLD_SIZE"),
                              "number of workers")
        self.metrics_group = None
        if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT") and self.world > 1:
            dist.init_process_group("gloo", init_method="env://", rank=self.rank, world_size=self.world)
            self.metrics_group = dist.group.WORLD
        self.model = model
        extra = {"warmup_steps": args.compress_warmup} if args.compress_warmup else {}
        et.broadcast_parameters(model)
        self.opt = et.DistributedOptimizer(
            model.named_parameters(), lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
            weight_decay=args.weight_decay, compressor=args.compressor, block=args.block,
            group_below=args.group_below, apply=args.apply, **extra)
        self.label = f"efps-{args.compressor}"
        self.wire_method = "counted"

    def after_step(self):
        pass

    def before_eval(self):
        self.opt.synchronize()  # parameters that no forward touches get their update too

    def stats(self, servers=False):
        """opt.stats(); with servers=True also the servers' residual norms
        (a request to each server: called between steps, after synchronize)."""
        return self.opt.stats(servers=servers)

    # The binding counts what this worker pushed (headers included); the
    # server sends each worker a pull of the same size (the same packed
    # format), so push + pull is twice that, as efps-train counts it.
    def wire_bytes(self):
        return 2 * int(self.stats()["wire_bytes"])

    def fp32_bytes(self):
        return 2 * int(self.stats()["fp32_bytes"])

    def finish(self):
        self.opt.finalize()
        if self.metrics_group is not None:
            dist.barrier()
            dist.destroy_process_group()


def create(args, model):
    return Efps(args, model) if args.dist == "efps" else Ddp(args, model)
