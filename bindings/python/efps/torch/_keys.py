"""Which parameter-server key carries each parameter (as apps/efps-train/sync.c).

Parameters are sorted by name, so every rank declares the same keys in the
same order whatever order named_parameters() gave. A parameter's key is a
32-bit hash of its name (the group's: of its members' names joined), so the
servers' layout check, which compares keys and sizes declaration by
declaration, compares names too, and its refusal ("key K of N elements vs key
K' ...") can be turned back into the parameter's name on this rank.

A parameter with fewer than group_below elements has no key of its own: every
message costs a 24-byte header and, with blocksign, a 64-byte scale section and
a sign section padded to 64 bytes. The small parameters of one param group
travel as one key whose buffer is their concatenation (in name order): a
gather into a contiguous staging buffer on push and a scatter after the pull
(the only copies the binding makes; large parameters are pushed from and
pulled into their own memory). The group's blocksign block is the greatest
common divisor of its members' offsets and of the run's block, so no block
mixes two parameters and each keeps at least one scale of its own.
"""
import math
import zlib


def name_key(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class Key:
    """One parameter-server key: one large parameter, or a group of small ones."""

    def __init__(self, key, members, group_index):
        self.key = key
        self.members = members  # [(name, param)], in name order
        self.group_index = group_index  # the param group it belongs to
        self.offsets = []
        n = 0
        for _, p in members:
            self.offsets.append(n)
            n += p.numel()
        self.n = n
        self.grouped = len(members) > 1
        self.block = None  # set by plan(): None = the run's
        self.twin = None  # the lossless warm-up twin's key (DistributedOptimizer)
        self.pushed_key = key  # the key of the last push: key or twin
        # per step
        self.arrived = 0  # members whose gradient is in (grouped keys)
        self.pushed = False  # pushed, not pulled yet
        self.pushed_step = -1  # the optimizer step of that push
        self.stage_grad = None  # grouped: contiguous gradient staging buffer
        self.stage_x = None  # grouped: contiguous parameter staging buffer
        self.names = [m[0] for m in members]

    def label(self):
        if not self.grouped:
            return "parameter %r" % self.names[0]
        return "group of %d small parameters (%s ... %s)" % (len(self.names), self.names[0],
                                                             self.names[-1])


def plan(groups, group_below, block):
    """groups: [[(name, param)], ...] per param group. Returns the keys in
    declaration order (sorted by the first member's name)."""
    keys = []
    for gi, named in enumerate(groups):
        small = []
        for name, p in sorted(named, key=lambda t: t[0]):
            if p.numel() < group_below:
                small.append((name, p))
            else:
                keys.append(Key(name_key(name), [(name, p)], gi))
        if len(small) == 1:
            keys.append(Key(name_key(small[0][0]), small, gi))
        elif small:
            k = Key(name_key("\n".join(n for n, _ in small)), small, gi)
            g = 0
            for off in k.offsets:
                g = math.gcd(g, off)
            k.block = math.gcd(g, block)
            keys.append(k)
    keys.sort(key=lambda k: k.names[0])
    seen = {}
    for k in keys:
        if k.key in seen:
            raise ValueError("efps: the names %r and %r hash to the same key %d; rename one" %
                             (seen[k.key], k.names[0], k.key))
        seen[k.key] = k.names[0]
    return keys
