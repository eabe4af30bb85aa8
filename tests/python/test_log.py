"""efps's log in Python: efps_log_set_handler hands every line to the binding,
which keeps a failed call's error lines for its efps.Error (per thread) and
shows every line on stderr, or gives it to the "efps" logger when logging is
configured."""
import ctypes
import logging
import threading

import pytest

import efps  # noqa: E402  (conftest.py puts bindings/python on sys.path)
from efps import _lib  # noqa: E402

_write = _lib.lib.efps_log_write
_write.restype = None


def server_role_init():
    """efps_ps_init with the server role: refused, with an error line logged
    on the calling thread."""
    c = _lib.PsConfig()
    _lib.ps_config_init(ctypes.byref(c))
    c.role = 2  # EFPS_ROLE_SERVER
    c.servers, c.secret, c.rank, c.num_workers = b"127.0.0.1:1", b"s3cret", 0, 1
    return _lib.create(_lib.ps_init_c, "efps_ps_init", ctypes.byref(c))


def test_error_carries_the_calls_log_and_stderr_shows_it(capfd, monkeypatch):
    # No handler for "efps" (pytest gives the root logger some): stderr.
    monkeypatch.setattr(logging.getLogger("efps"), "propagate", False)
    with pytest.raises(efps.Error) as ei:
        server_role_init()
    assert ei.value.name == "EFPS_ERR_INVALID"
    assert ei.value.log == ["efps_ps_init is for workers; servers run efps_server_create/run"]
    assert "efps_ps_init is for workers" in str(ei.value)
    err = capfd.readouterr().err
    line = [ln for ln in err.splitlines() if "efps_ps_init is for workers" in ln]
    assert len(line) == 1, err
    assert " efps " in line[0] and " error worker.c:" in line[0], line[0]


def test_lines_go_to_the_efps_logger_when_logging_is_configured(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="efps"):
        with pytest.raises(efps.Error):
            server_role_init()
        _write(1, b"here.c", 7, b"%s", b"a warning of efps")
    recs = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    errs = [m for n, lv, m in recs if n == "efps" and lv == logging.ERROR]
    assert len(errs) == 1 and errs[0].startswith("worker.c:"), recs
    assert errs[0].endswith(": efps_ps_init is for workers; servers run efps_server_create/run")
    assert ("efps", logging.WARNING, "here.c:7: a warning of efps") in recs
    assert "for workers" not in capfd.readouterr().err  # not twice


def test_each_thread_gets_its_own_lines():
    """Two threads fail calls at the same time, each logging its own line:
    each efps.Error has exactly its thread's lines."""
    def failing(msg):
        _write(0, b"t.c", 1, b"%s", msg)
        return -1  # EFPS_ERR_*: the status a real call would return

    bad = []

    def run(tag):
        for i in range(200):
            msg = ("%s %d" % (tag, i)).encode()
            try:
                _lib.call(failing, "call %s %d" % (tag, i), msg)
            except efps.Error as e:
                if e.log != [msg.decode()]:
                    bad.append((tag, i, e.log))
            else:
                bad.append((tag, i, "no error"))

    ts = [threading.Thread(target=run, args=(t,)) for t in ("A", "B")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad, bad[:5]


def test_lines_of_threads_outside_a_call_reach_a_call_failing_meanwhile():
    """A line logged by a thread that is not in a call (as efps's progress
    threads log a peer's failure) is added to the error of a call failing
    while it was logged, and not to a later one's."""
    logged = threading.Event()

    def failing():
        t = threading.Thread(target=_write, args=(0, b"tcp.c", 3, b"%s", b"peer went away"))
        t.start()
        t.join()
        logged.set()
        return -1

    with pytest.raises(efps.Error) as ei:
        _lib.call(failing, "push")
    assert logged.is_set() and ei.value.log == ["peer went away"]
    with pytest.raises(efps.Error) as ei:
        _lib.call(lambda: -1, "pull")
    assert ei.value.log == []
