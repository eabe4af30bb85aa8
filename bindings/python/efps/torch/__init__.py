"""efps.torch: dist-EF-blockSGDM for PyTorch over efps's parameter server.

    import efps.torch
    efps.torch.broadcast_parameters(model)                   # every rank starts from rank 0's
    opt = efps.torch.DistributedOptimizer(model.named_parameters(), lr=0.1,
                                          momentum=0.9, weight_decay=5e-4)
    for x, y in data:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    opt.finalize()
"""
from .optimizer import DistributedOptimizer  # noqa: F401
from .broadcast import average_buffers, broadcast_parameters  # noqa: F401
from .checkpoint import load, save  # noqa: F401

__all__ = ["DistributedOptimizer", "broadcast_parameters", "average_buffers", "save", "load"]
