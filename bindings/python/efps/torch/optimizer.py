"""efps.torch.DistributedOptimizer: dist-EF-blockSGDM over efps's parameter server,
as a torch.optim.Optimizer.

Per step, per key (DESIGN.md, "The algorithm"):
  backward: the moment a parameter's gradient is accumulated (a hook on its
    AccumulateGrad node, as Horovod does: torch 1.13 has no post-accumulate
    hook), its key is pushed with the lr of its param group (efps_ps_push:
    steps 1-5 in C, reading the gradient in place);
  apply="forward": the update is pulled and applied in place (step 8 on the
    parameter's memory) just before the next forward of the module that owns
    the parameter (a global module forward pre-hook), so the pulls of late
    layers overlap the forward of early ones;
  apply="step": every key is pulled at step().
warmup_steps=K (blocksign): every key has a lossless twin, the same tensor
declared with blocksign blocks of one element (each element is its own scale:
C(p) = |p| sign(p) = p, so both error-feedback residuals stay zero and a step
is fp32 SGDM's, as with compressor none). Steps 0..K-1 push and pull the
twins, steps K.. the compressed keys; both are declared from the start, so
the servers, the layout check and checkpoints see one layout. At the switch
the compressed key starts as a fresh blocksign run from the warmed-up
parameters: its momentum, weight-decay momentum and error feedback (worker
and server) are zero, since libefps keeps them per key and offers no way to
move them; momentum rebuilds within ~1/(1-momentum) steps. The twins' state
stays on the servers (memory) and in checkpoints, unused.
Call synchronize() (state_dict() and save() do) to have every pending update
applied, e.g. before evaluating with parameters that forward never touches.

Restrictions, each a clear exception: parameters and gradients are contiguous
float32 CPU tensors (TypeError naming the parameter); one backward per step
(no gradient accumulation across backward calls: RuntimeError); lr > 0.
"""
import math
import os
import warnings

import torch

from .. import _lib
from ..ps import PS
from ._keys import plan
from .broadcast import check_same_parameters, rank_and_size

_GROUP_KEYS = ("lr", )
_TWIN_BIT = 0x80000000  # name keys are 31-bit (_keys.name_key): twins never collide


def _check_tensor(name, t, what):
    if t.dtype != torch.float32:
        raise TypeError("efps: %s of %r is %s; efps needs float32" % (what, name, t.dtype))
    if t.device.type != "cpu":
        raise TypeError("efps: %s of %r is on %s; efps needs CPU tensors" % (what, name, t.device))
    if t.layout != torch.strided:
        raise TypeError("efps: %s of %r has layout %s; efps needs dense (strided) tensors" %
                        (what, name, t.layout))
    if not t.is_contiguous():
        raise TypeError("efps: %s of %r is not contiguous; efps reads and writes it in place" %
                        (what, name))


def _groups_of(named_parameters):
    """[(options, [(name, p)])] from (name, p) pairs or param-group dicts whose
    'params' are (name, p) pairs."""
    items = list(named_parameters)
    if items and isinstance(items[0], dict):
        out = []
        for g in items:
            g = dict(g)
            named = list(g.pop("params"))
            if named and not isinstance(named[0], tuple):
                raise TypeError("efps: a param group's 'params' must be (name, parameter) pairs")
            bad = set(g) - set(_GROUP_KEYS)
            if bad:
                raise ValueError("efps: per-group %s is not supported (momentum, nesterov and "
                                 "weight_decay are the run's); only lr may differ" % sorted(bad))
            out.append((g, named))
        return out
    for it in items:
        if not (isinstance(it, tuple) and len(it) == 2 and isinstance(it[0], str)):
            raise TypeError("efps: DistributedOptimizer takes model.named_parameters(), "
                            "(name, parameter) pairs; got %r" % (type(it), ))
    return [({}, items)]


def _env_mismatch(var, mine, convert):
    v = os.environ.get(var)
    if v is None or v == "":
        return
    if convert(v) != mine:
        raise ValueError("efps: the servers run %s=%s but this optimizer asks for %s; give the "
                         "launcher (python3 -m efps.run --compressor/--block) the same value" %
                         (var, v, mine))


class DistributedOptimizer(torch.optim.Optimizer):
    """dist-EF-blockSGDM through efps's parameter servers.

    named_parameters: model.named_parameters() (or param-group dicts with
      'params' as (name, parameter) pairs and their own 'lr'); parameters
      with requires_grad=False are left out. Every rank must give the same
      names and shapes (the servers check; the error names the parameter).
    lr, momentum, nesterov, weight_decay: SGD's (weight decay is applied
      exactly, uncompressed, after the pull).
    compressor: "blocksign" (the paper's C_B), "sign" (signum with majority
      vote) or "none" (fp32 SGDM, what DDP + SGD computes).
    block: blocksign elements per block; 0 = one block per tensor part.
    group_below: parameters with fewer elements travel as one key.
    apply: "forward" (pull before the owning module's next forward) or "step".
    warmup_steps: the first K steps uncompressed (see README).
    nonfinite: "skip" (a NaN/Inf gradient contributes zero for that key this
      step, with a RuntimeWarning naming the parameter; efps_ps_skip) or "raise".
    Connection settings (servers, secret, timeout_ms, transport, rank,
    num_workers, partition_bytes) default to EFPS_* and the launcher's
    variables, as in C.
    """

    def __init__(self, named_parameters, lr, momentum=0.9, nesterov=True, weight_decay=0,
                 compressor="blocksign", block=0, group_below=512, apply="forward",
                 warmup_steps=0, nonfinite="skip", servers=None, secret=None, timeout_ms=None,
                 transport=None, rank=None, num_workers=None, partition_bytes=None):
        if apply not in ("forward", "step"):
            raise ValueError("efps: apply must be 'forward' or 'step', not %r" % (apply, ))
        if compressor not in _lib.COMPRESSORS:
            raise ValueError("efps: compressor must be one of %s, not %r" %
                             (sorted(_lib.COMPRESSORS), compressor))
        if nonfinite not in ("skip", "raise"):
            raise ValueError("efps: nonfinite must be 'skip' or 'raise'")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError("efps: lr must be a finite value > 0, not %r" % (lr, ))
        warmup_steps = int(warmup_steps)
        if warmup_steps < 0:
            raise ValueError("efps: warmup_steps must be >= 0, not %d" % warmup_steps)
        if warmup_steps and compressor == "sign":
            raise ValueError("efps: warmup_steps needs compressor blocksign (its lossless twin "
                             "is blocksign with blocks of one element; sign has no scale)")
        _env_mismatch("EFPS_COMPRESSOR", compressor, str)
        _env_mismatch("EFPS_BLOCK", int(block), int)
        groups = _groups_of(named_parameters)
        param_groups = []
        named_groups = []
        for opts, named in groups:
            named = [(n, p) for n, p in named if p.requires_grad]
            for n, p in named:
                _check_tensor(n, p, "parameter")
            named_groups.append(named)
            g = {"params": [p for _, p in named]}
            g.update(opts)
            param_groups.append(g)
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(param_groups, defaults)
        self.apply_mode = apply
        self.nonfinite = nonfinite
        self.compressor = compressor
        self.block = int(block)
        self.group_below = int(group_below)
        self._keys = plan(named_groups, self.group_below, self.block)
        # compressor none is already lossless: warm-up changes nothing there
        self.warmup_steps = warmup_steps if compressor == "blocksign" else 0
        for k in self._keys:
            k.twin = (k.key | _TWIN_BIT) if self.warmup_steps else None
        self._key_of = {}  # id(param) -> (Key, member index)
        for k in self._keys:
            for i, (_, p) in enumerate(k.members):
                self._key_of[id(p)] = (k, i)
        self._steps = 0
        self._skipped = {}  # name -> steps skipped for a non-finite gradient
        self._failed = None
        if rank is None or num_workers is None:  # a launcher's job: check through its store
            try:
                r, n = rank_and_size()
            except RuntimeError:
                r = None
            if r is not None:
                check_same_parameters([m for named in named_groups for m in named], r, n)
        self._ps = PS(servers=servers, secret=secret, compressor=compressor, block=self.block,
                      timeout_ms=timeout_ms, transport=transport, rank=rank,
                      num_workers=num_workers, partition_bytes=partition_bytes,
                      momentum=float(momentum), nesterov=int(bool(nesterov)),
                      weight_decay=float(weight_decay))
        self.rank, self.num_workers = self._ps.rank, self._ps.num_workers
        self._declare()
        self._hooks = []
        self._grad_accs = []  # the AccumulateGrad nodes must outlive the hooks on them
        self._register_hooks()

    # ---- set-up ------------------------------------------------------------------
    def _declare(self):
        for k in self._keys:
            block = self.block if k.block is None else k.block
            try:
                self._ps.declare(k.key, k.n, block)
            except _lib.Error as e:
                raise _lib.Error(e.status, "declare %s" % k.label(), e.log) from None
            if k.twin is not None:
                try:
                    self._ps.declare(k.twin, k.n, 1)
                except _lib.Error as e:
                    raise _lib.Error(e.status, "declare the warm-up twin of %s" % k.label(),
                                     e.log) from None
            if k.grouped:
                k.stage_grad = torch.zeros(k.n, dtype=torch.float32)
                k.stage_x = torch.zeros(k.n, dtype=torch.float32)

    def _register_hooks(self):
        for k in self._keys:
            for i, (name, p) in enumerate(k.members):
                acc = p.expand_as(p).grad_fn.next_functions[0][0]
                self._hooks.append(acc.register_hook(self._make_grad_hook(k, i)))
                self._grad_accs.append(acc)
        if self.apply_mode == "forward":
            self._owned = {id(p) for k in self._keys for _, p in k.members}
            self._hooks.append(
                torch.nn.modules.module.register_module_forward_pre_hook(self._pre_forward))

    def _make_grad_hook(self, k, i):
        def hook(*unused):
            self._on_grad(k, i)
        return hook

    # ---- per step ----------------------------------------------------------------
    def _lr(self, k):
        lr = self.param_groups[k.group_index]["lr"]
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError("efps: lr of param group %d is %r at step %d; efps steps need a "
                             "finite lr > 0" % (k.group_index, lr, self._steps))
        return float(lr)

    def _guard(self):
        if self._failed is not None:
            raise _lib.Error(self._failed.status, "efps optimizer is unusable after: %s" %
                             self._failed.what, self._failed.log)

    def _on_grad(self, k, i):
        self._guard()
        name, p = k.members[i]
        g = p.grad
        _check_tensor(name, g, "gradient")
        if k.pushed and k.pushed_step < self._steps:
            # The last step's update was not applied yet (no forward of the
            # module since, e.g. a parameter used outside any module's
            # forward): apply it now; the C layer alternates push and pull.
            self._pull(k)
        if k.pushed or (k.arrived >> i) & 1:
            raise RuntimeError("efps: a second gradient of %r before step(): efps pushes "
                               "each gradient as backward produces it, so gradient "
                               "accumulation over several backward calls is not "
                               "supported" % name)
        if not k.grouped:
            self._push(k, g.data_ptr())
            return
        off = k.offsets[i]
        k.stage_grad[off:off + p.numel()].copy_(g.reshape(-1))
        k.arrived |= 1 << i
        if k.arrived == (1 << len(k.members)) - 1:
            self._push(k, k.stage_grad.data_ptr())

    def _wire_key(self, k):
        """The key this step travels on: the lossless twin during warm-up."""
        return k.twin if k.twin is not None and self._steps < self.warmup_steps else k.key

    def _push(self, k, ptr):
        lr = self._lr(k)
        k.pushed_key = self._wire_key(k)
        try:
            self._ps.push(k.pushed_key, ptr, lr)
        except _lib.Error as e:
            if e.name == "EFPS_ERR_NONFINITE":
                self._nonfinite(k, lr, e)
            else:
                self._fail(e, "push of %s" % k.label())
        k.pushed = True
        k.pushed_step = self._steps
        k.arrived = 0

    def _nonfinite(self, k, lr, e):
        if self.nonfinite == "raise":
            raise FloatingPointError("efps: non-finite gradient (NaN or Inf) in %s at step %d" %
                                     (k.label(), self._steps)) from None
        try:
            self._ps.skip(k.pushed_key, lr)
        except _lib.Error as e2:
            self._fail(e2, "skip of %s" % k.label())
        for n in k.names:
            self._skipped[n] = self._skipped.get(n, 0) + 1
        warnings.warn("efps: non-finite gradient in %s at step %d: this rank contributes zero "
                      "for it this step" % (k.label(), self._steps), RuntimeWarning)

    def _fail(self, e, what):
        err = _lib.Error(e.status, "%s (rank %d)" % (what, self.rank), self._explain(e.log))
        self._failed = err
        raise err from None

    def _explain(self, log):
        """Layout refusals name keys: say which parameter a key is on this rank."""
        out = list(log)
        names = {k.key: k.label() for k in self._keys}
        names.update({k.twin: "the warm-up twin of " + k.label() for k in self._keys
                      if k.twin is not None})
        for line in log:
            if "layout differs" in line or "declaration" in line:
                for tok in line.replace(",", " ").split():
                    if tok.isdigit() and int(tok) in names:
                        out.append("key %s is %s on rank %d" % (tok, names[int(tok)], self.rank))
        return out

    def _pull(self, k):
        if not k.pushed:
            return
        try:
            if not k.grouped:
                self._ps.pull(k.pushed_key, k.members[0][1].data_ptr())
            else:
                x = k.stage_x
                for (_, p), off in zip(k.members, k.offsets):  # the members may have been
                    x[off:off + p.numel()].copy_(p.detach().reshape(-1))  # set from outside
                self._ps.pull(k.pushed_key, x.data_ptr())
                with torch.no_grad():
                    for (_, p), off in zip(k.members, k.offsets):
                        p.view(-1).copy_(x[off:off + p.numel()])
        except _lib.Error as e:
            self._fail(e, "pull of %s" % k.label())
        k.pushed = False

    def _pre_forward(self, module, inputs):
        for p in module._parameters.values():
            if p is not None and id(p) in self._owned:
                k, _ = self._key_of[id(p)]
                if k.pushed and k.pushed_step < self._steps:  # step() has been called since
                    self._pull(k)

    def _push_missing(self):
        """Keys some of whose parameters got no gradient this step (unused in
        forward): pushed with zeros for those, so no rank waits for them."""
        for k in self._keys:
            if k.pushed and k.pushed_step == self._steps:
                continue
            self._pull(k)  # a module that did not run: last step's update is still due
            if not k.grouped:
                self._warn_unused(k.names)
                zeros = torch.zeros(k.n, dtype=torch.float32)  # alive across the call
                self._push(k, zeros.data_ptr())
                continue
            missing = [i for i in range(len(k.members)) if not (k.arrived >> i) & 1]
            if missing:
                self._warn_unused([k.names[i] for i in missing])
            for i in missing:
                name, p = k.members[i]
                off = k.offsets[i]
                k.stage_grad[off:off + p.numel()].zero_()
                k.arrived |= 1 << i
            self._push(k, k.stage_grad.data_ptr())

    def _warn_unused(self, names):
        if not getattr(self, "_warned_unused", False):
            self._warned_unused = True
            warnings.warn("efps: no gradient this step for %s: pushed as zeros" %
                          ", ".join(names[:5]), RuntimeWarning)

    @torch.no_grad()
    def step(self, closure=None):
        self._guard()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._push_missing()
        if self.apply_mode == "step":
            self.synchronize()
        self._steps += 1
        return loss

    def synchronize(self):
        """Applies every pushed update that is not applied yet."""
        self._guard()
        for k in self._keys:
            self._pull(k)

    def zero_grad(self, set_to_none=True):
        super().zero_grad(set_to_none=set_to_none)

    # ---- observability -------------------------------------------------------------
    def stats(self, servers=False):
        """Per key and in total: wire bytes and the fp32 bytes they stand for,
        this worker's error-feedback residual norm ||e_i||, the blocksign
        scales of its last push (min/mean/max), and with servers=True the
        servers' residual norm ||e~|| (one request per server, between steps).

        {'steps', 'wire_bytes', 'fp32_bytes', 'compression', 'worker_residual',
         'server_residual', 'skipped', 'keys': {label: {...}}}"""
        wire, fp32 = self._ps.traffic()
        keys = {}
        total_ss = 0.0
        live = self._ps._ps is not None and any(k.pushed or k.pushed_step >= 0 for k in self._keys)
        srv = None
        if servers and live:
            srv = self._ps.server_residuals([k.pushed_key for k in self._keys])
        for i, k in enumerate(self._keys):
            # during warm-up the twin's: the key the last step travelled on
            d = {"key": k.pushed_key, "elements": k.n, "params": list(k.names)}
            if live:
                d.update(self._ps.key_stats(k.pushed_key))
                total_ss += d["worker_residual"] ** 2
                if srv is not None:
                    d["server_residual"] = srv[i]
            keys[k.label()] = d
        out = {"steps": self._steps, "wire_bytes": wire, "fp32_bytes": fp32,
               "compression": (fp32 / wire) if wire else None, "keys": keys,
               "skipped": dict(self._skipped)}
        if live:
            out["worker_residual"] = math.sqrt(total_ss)
        if srv is not None:
            out["server_residual"] = math.sqrt(sum(v * v for v in srv))
        return out

    # ---- state -----------------------------------------------------------------------
    def state_dict(self):
        self.synchronize()
        sd = super().state_dict()
        sd["efps"] = {"steps": self._steps, "compressor": self.compressor, "block": self.block,
                      "keys": self._declared(), "warmup_steps": self.warmup_steps,
                      "skipped": dict(self._skipped)}
        return sd

    def _declared(self):
        return [k.key for k in self._keys] + [k.twin for k in self._keys if k.twin is not None]

    def load_state_dict(self, state_dict):
        sd = dict(state_dict)
        meta = sd.pop("efps", None)
        super().load_state_dict(sd)
        if meta is not None:
            if meta["keys"] != self._declared():
                raise ValueError("efps: this state dict is of another model layout")
            if meta.get("warmup_steps", 0) != self.warmup_steps:
                raise ValueError("efps: this state dict is of a run with warmup_steps=%d, this "
                                 "optimizer has %d" % (meta.get("warmup_steps", 0),
                                                       self.warmup_steps))
            self._steps = meta["steps"]
            self._skipped = dict(meta.get("skipped", {}))

    def finalize(self):
        """Waits for the outstanding updates, says goodbye to the servers and
        disconnects. Raises the first error the worker saw."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._failed is None:
            try:
                self.synchronize()
            except _lib.Error:
                self._ps.close()
                raise
            self._ps.finalize()
        else:
            self._ps.close()

    def __del__(self):
        try:
            for h in getattr(self, "_hooks", []):
                h.remove()
            ps = getattr(self, "_ps", None)
            if ps is not None:
                ps.close()
        except Exception:
            pass
