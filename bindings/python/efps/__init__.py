"""efps: Python binding of libefps (ctypes over the public C API).

    import efps
    efps.library_path(), efps.library_origin()   # which libefps, and why that one
    efps.PS(...)                                  # a worker's connection (efps_ps_t)
    efps.torch.DistributedOptimizer(...)          # the PyTorch front end (import efps.torch)
    python3 -m efps.run --workers N --servers S script.py ...   # launcher

Every failed call raises efps.Error (status, name, what, log).
"""
from ._lib import (Error, LibraryNotFound, library_origin, library_path, status_name,  # noqa: F401
                   strerror)
from .ps import PS  # noqa: F401

__all__ = ["Error", "LibraryNotFound", "PS", "library_path", "library_origin", "status_name",
           "strerror"]
