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
import atexit
import collections
import ctypes
import ctypes.util
import itertools
import logging
import os
import threading
import time

_PKG = os.path.dirname(os.path.abspath(__file__))
_BUILD_TREE = os.path.normpath(os.path.join(_PKG, "..", "..", "..", "build", "libefps.so"))

# Status names, as efps_status_name gives them; filled once the library loads.
OK = 0


class Error(RuntimeError):
    """A call into libefps failed.

    status: the efps_status_t value (negative); name: its symbolic name
    ("EFPS_ERR_PEER"); what: the call and its subject; log: the error lines
    efps logged during the call (what failed and with whom), received through
    efps_log_set_handler (and still shown on stderr, or given to the "efps"
    logger when logging is configured).
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
        ("port_file", c_char_p),
        ("ib_dev", c_char_p),
        ("ib_gid", c_char_p),
        ("cpu_affinity", c_char_p),
        ("insecure", c_int),
        ("login_timeout_ms", c_int),
        ("max_pending", c_int),
        ("max_pending_per_host", c_int),
        ("ckpt_dir", c_char_p),
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


def _proto(name, restype, *argtypes):
    fn = getattr(lib, name, None)
    if fn is None:
        raise LibraryNotFound("efps: %s (%s) has no %s: it is not the libefps this package "
                              "belongs to (rebuild it, or point EFPS_LIBRARY at the right one)" %
                              (_path, _origin, name))
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


strerror_c = _proto("efps_strerror", c_char_p, c_int)
status_name_c = _proto("efps_status_name", c_char_p, c_int)
ps_config_init = _proto("efps_ps_config_init", None, POINTER(PsConfig))
ps_init_c = _proto("efps_ps_init", c_int, POINTER(PsConfig), POINTER(c_void_p))
ps_declare_block = _proto("efps_ps_declare_block", c_int, c_void_p, c_u32, c_size, c_size)
ps_push = _proto("efps_ps_push", c_int, c_void_p, c_u32, c_void_p, c_float)
ps_pull = _proto("efps_ps_pull", c_int, c_void_p, c_u32, c_void_p)
ps_finalize = _proto("efps_ps_finalize", c_int, c_void_p)
ps_traffic = _proto("efps_ps_traffic", None, c_void_p, POINTER(c_u64), POINTER(c_u64))
ps_rank = _proto("efps_ps_rank", c_int, c_void_p)
ps_num_workers = _proto("efps_ps_num_workers", c_int, c_void_p)
ps_skip = _proto("efps_ps_skip", c_int, c_void_p, c_u32, c_float)
ps_save = _proto("efps_ps_save", c_int, c_void_p, c_char_p)
ps_load = _proto("efps_ps_load", c_int, c_void_p, c_char_p)
ps_key_stats = _proto("efps_ps_key_stats", c_int, c_void_p, c_u32, POINTER(KeyStats))
ps_server_residuals = _proto("efps_ps_server_residuals", c_int, c_void_p, POINTER(c_u32), c_size,
                             POINTER(ctypes.c_double))
encoded_size = _proto("efps_encoded_size", c_size, POINTER(OptimConfig), c_size)

# The optimizer objects, for tests that run the C path directly.
worker_opt_create_c = _proto("efps_worker_opt_create", c_int, POINTER(OptimConfig), c_size,
                             POINTER(c_void_p))
server_opt_create_c = _proto("efps_server_opt_create", c_int, POINTER(OptimConfig), c_size, c_int,
                             POINTER(c_void_p))
worker_opt_destroy = _proto("efps_worker_opt_destroy", None, c_void_p)
worker_opt_encode = _proto("efps_worker_opt_encode", c_int, c_void_p, c_void_p, c_float, c_void_p)
worker_opt_apply = _proto("efps_worker_opt_apply", c_int, c_void_p, c_void_p, c_float, c_void_p)
server_opt_destroy = _proto("efps_server_opt_destroy", None, c_void_p)
server_opt_reduce = _proto("efps_server_opt_reduce", c_int, c_void_p, POINTER(c_void_p), c_float,
                           c_void_p)
aligned_alloc = _proto("efps_aligned_calloc", c_void_p, c_size)
aligned_free = _proto("efps_aligned_free", None, c_void_p)
LOG_HANDLER_T = ctypes.CFUNCTYPE(None, c_int, c_char_p, c_void_p)
log_set_handler = _proto("efps_log_set_handler", None, LOG_HANDLER_T, c_void_p)


def strerror(status):
    return strerror_c(int(status)).decode()


def status_name(status):
    return status_name_c(int(status)).decode()


# ---- efps's log: through efps_log_set_handler -----------------------------------
# Every line efps logs comes to _on_line, on the thread that logs it: the
# caller's (inside a call below) or one of efps's own (the transports'
# progress threads). Some lines are logged with a transport's lock held
# (lib/core/log.c calls the handler outside its own lock, but e.g.
# transport/tcp/tcp_conn.c and tcp_mr.c log under ctx->base.lock), and a ctypes
# callback first takes the GIL. That cannot deadlock: every efps call here goes
# through ctypes.CDLL, which releases the GIL for the call, so no Python thread
# waits for an efps lock while holding the GIL. It can delay the thread that
# logs until the GIL is free, so _on_line does little: keep the line for the
# calling thread's exception and hand it on (one write to fd 2 as efps itself
# did, or the "efps" logger when the program has configured logging).
_tls = threading.local()
_logger = logging.getLogger("efps")
_LEVEL_NAMES = ("error", "warn", "info", "debug", "trace")
_PY_LEVELS = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG, 5)
# Lines of threads that are not inside a call (efps's progress threads):
# (sequence number, message), so that a failed call also gets those logged
# while it ran (a peer failure is seen, and logged, by the progress thread).
_background = collections.deque(maxlen=64)
_seq = itertools.count(1)
_last_seq = 0


def _forward(level, text):
    if _logger.hasHandlers():
        _logger.log(_PY_LEVELS[level], "%s", text)
        return
    now = time.time()
    os.write(2, ("[%d.%06d] efps %d %s %s\n" % (int(now), int(now * 1e6) % 1000000, os.getpid(),
                                                 _LEVEL_NAMES[level], text)).encode(
                                                     errors="replace"))


def _on_line(level, line, _arg):
    global _last_seq
    try:
        level = min(max(int(level), 0), len(_LEVEL_NAMES) - 1)
        text = line.decode(errors="replace")
        if level <= 1:  # error and warn lines say what failed and with whom
            msg = text.split(": ", 1)[-1]  # without "file.c:123: "
            buf = getattr(_tls, "lines", None)
            if buf is not None:
                buf.append(msg)
            else:
                _last_seq = next(_seq)
                _background.append((_last_seq, msg))
        _forward(level, text)
    except BaseException:  # nothing may propagate into C; a lost log line is the lesser harm
        pass


# Kept referenced for the life of the process: efps calls it from its threads
# until the handler is removed, and even a moment after (core.h).
_handler = LOG_HANDLER_T(_on_line)
log_set_handler(_handler, None)


@atexit.register
def _unhook():
    # Before the interpreter goes away: an efps thread that logs later
    # writes to stderr itself instead of waiting for a GIL that is gone.
    log_set_handler(LOG_HANDLER_T(), None)  # NULL: stderr again


def call(fn, what, *args):
    """Calls fn(*args), a function returning efps_status_t; raises Error on failure
    with the error lines efps logged meanwhile (on this thread, and on efps's
    own threads)."""
    since = _last_seq
    _tls.lines = []
    try:
        st = fn(*args)
    finally:
        lines, _tls.lines = _tls.lines, None
    if st != OK:
        lines += [m for s, m in list(_background) if s > since]
        raise Error(st, what, lines)
    return st


def create(fn, what, *args):
    """A creator, efps_xxx(args..., &obj) -> status: the object pointer."""
    out = c_void_p()
    call(fn, what, *args, ctypes.byref(out))
    return out
