"""Keep torch's optional triton dependency from crashing napari.

Importing ``torchvision`` (and so ``segment_anything`` and ``open_clip``) imports triton,
whose native library bundles its own LLVM. If that library is loaded *after* an OpenGL
context exists on Mesa's software renderer (llvmpipe: machines without a GPU, VMs,
remote desktops, Xvfb), its LLVM symbols bind to Mesa's and the process segfaults.
Loading triton before any GL context is safe; after one, loading it with
``RTLD_DEEPBIND`` makes it use its own symbols.

Nothing happens at import. The napari side (``napari_slip._napari``) calls
:func:`preload_triton` when the plugin loads; the engine calls
:func:`guard_gui_process` just before it first imports torchvision, which acts only if
a GUI toolkit is already in the process (a script without napari is left alone).
"""

from __future__ import annotations

import importlib.util
import os
import sys

_GUI_MODULES = ("vispy", "napari", "PyQt5", "PyQt6", "PySide2", "PySide6")


def preload_triton() -> None:
    """Import triton now (if installed and not yet imported), safely for a GL process."""
    if "triton" in sys.modules:
        return
    try:
        if importlib.util.find_spec("triton") is None:
            return
    except (ImportError, ValueError):
        return
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    gui = any(name in sys.modules for name in _GUI_MODULES)
    flags = sys.getdlopenflags() if hasattr(sys, "getdlopenflags") else None
    try:
        if gui and deepbind and flags is not None:
            sys.setdlopenflags(flags | deepbind)
        import triton  # noqa: F401
    except Exception:
        pass  # triton is optional for everything napari-slip does
    finally:
        if flags is not None:
            sys.setdlopenflags(flags)


def guard_gui_process() -> None:
    """:func:`preload_triton`, but only in a process that already has a GUI toolkit."""
    if "triton" not in sys.modules and any(name in sys.modules for name in _GUI_MODULES):
        preload_triton()
