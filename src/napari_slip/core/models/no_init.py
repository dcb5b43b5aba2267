"""Building a model whose every weight is then read from a file, without first drawing
random weights for it.

PyTorch's modules initialise their weights randomly when built (``nn.Linear``'s
Kaiming uniform draw, open_clip's normal draws): for SAM ViT-B and CLIP ViT-B/32 about
a second on 2 CPU cores, of a first prompt's 2 s of loading, all of it overwritten by
the checkpoint a moment later. Inside :func:`skip_random_init` the initialisers of
``torch.nn.init`` and the in-place random fills ``Tensor.uniform_`` / ``normal_``
leave the tensor as it was allocated. Used only where the caller then loads every
parameter with a check that none is missing (``load_sam``, the CLIP loaders).

The switch is a ``TorchFunctionMode``: it applies to the thread that entered it only
(PyTorch keeps the mode stack per thread), so a model built at the same time in
another thread (a fine-tuning head) is initialised as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

#: In-place random fills that initialisers outside ``torch.nn.init`` call directly
#: (``timm``'s truncated normal, open_clip's ``normal_``).
_RANDOM_FILLS = (torch.Tensor.uniform_, torch.Tensor.normal_)


class _SkipRandomInit(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" or func in _RANDOM_FILLS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextlib.contextmanager
def skip_random_init() -> Iterator[None]:
    """Models built inside keep their weights as allocated (not random): for a build
    whose every parameter is loaded from a file next (see the module doc)."""
    with torch.no_grad(), _SkipRandomInit():
        yield


__all__ = ["skip_random_init"]
