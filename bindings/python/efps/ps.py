"""efps.PS: one worker's connection to the parameter servers (efps_ps_t).

Buffers are passed as addresses (int) of float32 memory, e.g. a torch
tensor's data_ptr() or a numpy array's ctypes.data: nothing is copied here.
"""
import ctypes

from . import _lib
from ._lib import Error, call  # noqa: F401


class PS:
    """efps_ps_init with every unset field taken from EFPS_* and the launcher.

    Keyword arguments are fields of efps_ps_config_t (servers, secret,
    compressor, block, timeout_ms, momentum, nesterov, weight_decay, rank,
    num_workers, transport, partition_bytes); the role is always worker.
    """

    def __init__(self, **cfg):
        c = _lib.PsConfig()
        _lib.ps_config_init(ctypes.byref(c))
        c.role = _lib.ROLE_WORKER
        self._keep = []  # bytes objects the config points into
        for k, v in cfg.items():
            if v is None:
                continue
            if not hasattr(c, k):
                raise TypeError("efps.PS: no configuration field %r" % k)
            if isinstance(v, str):
                v = v.encode()
                self._keep.append(v)
            setattr(c, k, v)
        self._cfg = c
        self._ps = None
        self._last_traffic = (0, 0)
        self._ps = _lib.create(_lib.ps_init_c, "efps_ps_init", ctypes.byref(c))
        self.rank = _lib.ps_rank(self._ps)
        self.num_workers = _lib.ps_num_workers(self._ps)

    def _check(self):
        if self._ps is None:
            raise Error(-14, "efps.PS used after finalize")  # EFPS_ERR_STATE
        return self._ps

    def declare(self, key, n, block):
        call(_lib.ps_declare_block, "declare key %d (%d elements)" % (key, n), self._check(), key,
             n, block)

    def push(self, key, grad_ptr, lr):
        call(_lib.ps_push, "push key %d" % key, self._check(), key, grad_ptr, lr)

    def skip(self, key, lr):
        call(_lib.ps_skip, "skip key %d" % key, self._check(), key, lr)

    def pull(self, key, x_ptr):
        call(_lib.ps_pull, "pull key %d" % key, self._check(), key, x_ptr)

    def save(self, path):
        call(_lib.ps_save, "save checkpoint %s" % path, self._check(), path.encode())

    def load(self, path):
        call(_lib.ps_load, "load checkpoint %s" % path, self._check(), path.encode())

    def key_stats(self, key):
        """This worker's statistics of key (efps_ps_key_stats) as a dict."""
        st = _lib.KeyStats()
        call(_lib.ps_key_stats, "stats of key %d" % key, self._check(), key, ctypes.byref(st))
        return {f: getattr(st, f) for f, _ in _lib.KeyStats._fields_}

    def server_residuals(self, keys):
        """||e~||_2 on the servers per key (a round trip to every server)."""
        ks = (ctypes.c_uint32 * len(keys))(*keys)
        out = (ctypes.c_double * len(keys))()
        call(_lib.ps_server_residuals, "server residuals", self._check(), ks, len(keys), out)
        return list(out)

    def traffic(self):
        """(wire bytes pushed, fp32 bytes they stand for)."""
        if self._ps is None:
            return self._last_traffic  # after finalize: what it had sent
        w, f = ctypes.c_uint64(), ctypes.c_uint64()
        _lib.ps_traffic(self._ps, ctypes.byref(w), ctypes.byref(f))
        return w.value, f.value

    def finalize(self):
        """Says goodbye to the servers and frees everything; raises the first
        error the worker saw. A second call does nothing."""
        if self._ps is not None:
            self._last_traffic = self.traffic()
        ps, self._ps = self._ps, None
        if ps is not None:
            call(_lib.ps_finalize, "finalize", ps)

    def close(self):
        """finalize without raising (for cleanup after another error)."""
        try:
            self.finalize()
        except Error:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.finalize()
        else:
            self.close()
