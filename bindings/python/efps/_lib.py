"""Finding and loading libefps, the prototypes of its public API, and efps.Error.

The library is looked for, in this order (the first that exists is loaded,
and `efps.library_path()` / `efps.library_origin()` say which and why):
  1. EFPS_LIBRARY: a path to libefps.so (nothing else is tried when it is set:
     a wrong path is an error, not a silent fallback to another build);
  2. the build tree, when the package runs from a checkout:
     <repo>/build/libefps.so (the package is <repo>/bindings/python/efps);
  3. the install prefix: ctypes.util.find_library("efps") (ldconfig's cache,
     LD_LIBRARY_PATH), e.g. /usr/local/lib/libefps.so.0.
"""
import collections
import ctypes
import ctypes.util
import os
import sys
import threading

_PKG = os.path.dirname(os.path.abspath(__file__))
_BUILD_TREE = os.path.normpath(os.path.join(_PKG, "..", "..", "..", "build", "libefps.so"))

# Status names, as efps_status_name gives them; filled once the library loads.
OK = 0


class Error(RuntimeError):
    """A call into libefps failed.

    status: the efps_status_t value (negative); name: its symbolic name
    ("EFPS_ERR_PEER"); what: the call and its subject; log: the error lines
    efps logged during the call (what failed and with whom), captured from
    its stderr (and still shown there).
    """

    def __init__(self, status, what, log=()):
        self.status = int(status)
        self.name = status_name(self.status)
        self.what = what
        self.log = list(log)
        detail = "; ".join(self.log) if self.log else strerror(self.status)
        super().__init__("%s: %s (%s)" % (what, self.name, detail))


class LibraryNotFound(ImportError):
    pass


def _candidates():
    env = os.environ.get("EFPS_LIBRARY")
    if env:
        return [(env, "EFPS_LIBRARY=%s" % env)]
    out = []
    if os.path.exists(_BUILD_TREE):
        out.append((_BUILD_TREE, "the build tree of this checkout"))
    found = ctypes.util.find_library("efps")
    if found:
        out.append((found, "the install prefix (ctypes.util.find_library('efps'))"))
    return out


def _load():
    tried = []
    for path, why in _candidates():
        try:
            return ctypes.CDLL(path), path, why
        except OSError as e:
            tried.append("%s (%s): %s" % (path, why, e))
    if not tried:
        tried.append("EFPS_LIBRARY is not set; no %s; find_library('efps') found nothing "
                     "(not installed, or not in ldconfig's cache)" % _BUILD_TREE)
    raise LibraryNotFound("efps: cannot load libefps: " + "; ".join(tried) +
                          ". Build it (scripts/build.sh build) or set EFPS_LIBRARY=/path/libefps.so")


lib, _path, _origin = _load()


def library_path():
    return _path


def library_origin():
    return _origin


# ---- prototypes -----------------------------------------------------------------
c_int, c_size, c_u32, c_u64, c_float = (ctypes.c_int, ctypes.c_size_t, ctypes.c_uint32,
                                        ctypes.c_uint64, ctypes.c_float)
c_char_p, c_void_p, POINTER = ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER


class PsConfig(ctypes.Structure):
    """efps_ps_config_t (include/efps/ps.h), field for field."""
    _fields_ = [
        ("role", c_int),
        ("rank", c_int),
        ("num_workers", c_int),
        ("servers", c_char_p),
        ("bind", c_char_p),
        ("transport", c_char_p),
        ("secret", c_char_p),
        ("compressor", c_char_p),
        ("block", ctypes.c_long),
        ("partition_bytes", c_size),
        ("timeout_ms", c_int),
        ("momentum", c_float),
        ("nesterov", c_int),
        ("weight_decay", c_float),
    ]


class OptimConfig(ctypes.Structure):
    """efps_optim_config_t (include/efps/optim.h)."""
    _fields_ = [
        ("compressor", c_int),
        ("block", c_size),
        ("momentum", c_float),
        ("nesterov", c_int),
        ("weight_decay", c_float),
    ]


class KeyStats(ctypes.Structure):
    """efps_ps_key_stats_t (include/efps/ps.h)."""
    _fields_ = [
        ("pushes", c_u64),
        ("wire_bytes", c_u64),
        ("fp32_bytes", c_u64),
        ("worker_residual", ctypes.c_double),
        ("blocks", c_u64),
        ("scale_min", c_float),
        ("scale_mean", c_float),
        ("scale_max", c_float),
    ]


ROLE_WORKER = 1
COMPRESSORS = {"none": 0, "sign": 1, "blocksign": 2}


def _proto(name, restype, *argtypes, optional=False):
    fn = getattr(lib, name, None)
    if fn is None:
        if optional:
            return None
        raise LibraryNotFound("efps: %s (%s) has no %s: too old a libefps" % (_path, _origin, name))
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


strerror_c = _proto("efps_strerror", c_char_p, c_int)
status_name_c = _proto("efps_status_name", c_char_p, c_int)
ps_config_init = _proto("efps_ps_config_init", None, POINTER(PsConfig))
# efps_ps_init(cfg, &ps) returns a status (the creators' convention); older
# libraries returned the pointer. Told apart by a symbol of the same change.
NEW_CREATORS = getattr(lib, "efps_server_create", None) is not None
if NEW_CREATORS:
    ps_init_c = _proto("efps_ps_init", c_int, POINTER(PsConfig), POINTER(c_void_p))
else:
    ps_init_c = _proto("efps_ps_init", c_void_p, POINTER(PsConfig))
ps_declare_block = _proto("efps_ps_declare_block", c_int, c_void_p, c_u32, c_size, c_size)
ps_push = _proto("efps_ps_push", c_int, c_void_p, c_u32, c_void_p, c_float)
ps_pull = _proto("efps_ps_pull", c_int, c_void_p, c_u32, c_void_p)
ps_finalize = _proto("efps_ps_finalize", c_int, c_void_p)
ps_traffic = _proto("efps_ps_traffic", None, c_void_p, POINTER(c_u64), POINTER(c_u64))
ps_rank = _proto("efps_ps_rank", c_int, c_void_p)
ps_num_workers = _proto("efps_ps_num_workers", c_int, c_void_p)
ps_skip = _proto("efps_ps_skip", c_int, c_void_p, c_u32, c_float, optional=True)
ps_save = _proto("efps_ps_save", c_int, c_void_p, c_char_p, optional=True)
ps_load = _proto("efps_ps_load", c_int, c_void_p, c_char_p, optional=True)
ps_key_stats = _proto("efps_ps_key_stats", c_int, c_void_p, c_u32, POINTER(KeyStats),
                      optional=True)
ps_server_residuals = _proto("efps_ps_server_residuals", c_int, c_void_p, POINTER(c_u32), c_size,
                             POINTER(ctypes.c_double), optional=True)
encoded_size = _proto("efps_encoded_size", c_size, POINTER(OptimConfig), c_size)

# The optimizer objects, for tests that run the C path directly.
if NEW_CREATORS:
    worker_opt_create_c = _proto("efps_worker_opt_create", c_int, POINTER(OptimConfig), c_size,
                                 POINTER(c_void_p))
    server_opt_create_c = _proto("efps_server_opt_create", c_int, POINTER(OptimConfig), c_size,
                                 c_int, POINTER(c_void_p))
else:
    worker_opt_create_c = _proto("efps_worker_opt_create", c_void_p, POINTER(OptimConfig), c_size)
    server_opt_create_c = _proto("efps_server_opt_create", c_void_p, POINTER(OptimConfig), c_size,
                                 c_int)
worker_opt_destroy = _proto("efps_worker_opt_destroy", None, c_void_p)
worker_opt_encode = _proto("efps_worker_opt_encode", c_int, c_void_p, c_void_p, c_float, c_void_p)
worker_opt_apply = _proto("efps_worker_opt_apply", c_int, c_void_p, c_void_p, c_float, c_void_p)
server_opt_destroy = _proto("efps_server_opt_destroy", None, c_void_p)
server_opt_reduce = _proto("efps_server_opt_reduce", c_int, c_void_p, POINTER(c_void_p), c_float,
                           c_void_p)
aligned_alloc = _proto("efps_aligned_calloc", c_void_p, c_size)
aligned_free = _proto("efps_aligned_free", None, c_void_p)


def strerror(status):
    return strerror_c(int(status)).decode()


def status_name(status):
    return status_name_c(int(status)).decode()


# ---- efps's log: captured per thread for the exceptions ---------------------------
# efps writes its log to stderr (fd 2). efps_log_set_handler (planned in
# include/efps/core.h, not there yet) will replace the capture below; it is
# not called on a guessed prototype, which would crash on a different one.
_tls = threading.local()
_recent = collections.deque(maxlen=32)  # the last error lines, of any thread
LOG_CAPTURED = False


class _Stderr:
    """Without efps_log_set_handler, efps writes its log to file descriptor 2:
    for the duration of a call, fd 2 is pointed at a scratch file, whose
    content is then written to the real stderr and its error lines kept for
    the exception. A few microseconds per call (see bindings/python/bench)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.scratch = None

    def __enter__(self):
        self.lock.acquire()
        if self.scratch is None:
            import tempfile
            self.scratch = tempfile.TemporaryFile()
        try:
            sys.stderr.flush()
        except Exception:
            pass
        self.saved = os.dup(2)
        os.dup2(self.scratch.fileno(), 2)
        return self

    def __exit__(self, *exc):
        fd = self.scratch.fileno()
        try:
            os.dup2(self.saved, 2)
            os.close(self.saved)
            size = os.lseek(fd, 0, os.SEEK_END)
            data = os.pread(fd, size, 0) if size else b""
            if size:
                os.ftruncate(fd, 0)
                os.write(2, data)
        finally:
            self.lock.release()
        buf = getattr(_tls, "lines", None)
        for line in data.decode(errors="replace").splitlines():
            # "[time] efps <pid> error <file>:<line>: <message>"
            parts = line.split(" ", 4)
            if len(parts) == 5 and parts[1] == "efps" and parts[3] in ("error", "warn"):
                msg = parts[4].split(": ", 1)[-1]
                _recent.append(msg)
                if buf is not None:
                    buf.append(msg)


_stderr = _Stderr()


def _invoke(fn, *args):
    """fn(*args) and the error lines efps logged meanwhile."""
    _tls.lines = []
    try:
        if _stderr is None:
            r = fn(*args)
        else:
            with _stderr:
                r = fn(*args)
    finally:
        lines, _tls.lines = _tls.lines, None
    return r, lines


def call(fn, what, *args):
    """Calls fn(*args), a function returning efps_status_t; raises Error on failure
    with the error lines efps logged meanwhile."""
    st, lines = _invoke(fn, *args)
    if st != OK:
        raise Error(st, what, lines)
    return st


def call_ptr(fn, what, *args):
    """A call of the old creators returning a pointer, NULL on failure."""
    p, lines = _invoke(fn, *args)
    if not p:
        raise Error(-1, what, lines)  # EFPS_ERR_INVALID: the old API gave no status
    return ctypes.c_void_p(p)


def create(new_fn, what, *args):
    """A creator: new style efps_xxx_create(args..., &obj) -> status, or old
    style returning NULL on failure. Returns the object pointer."""
    if not NEW_CREATORS:
        return call_ptr(new_fn, what, *args)
    out = c_void_p()
    call(new_fn, what, *args, ctypes.byref(out))
    return out
