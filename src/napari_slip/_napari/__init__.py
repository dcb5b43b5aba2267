"""The napari plugin: a thin Qt client of :mod:`napari_slip.core`.

Importing it (napari does, when a contribution is first used) loads triton before
anything imports torchvision, so that a process with an OpenGL context on Mesa's
software renderer does not crash (see :mod:`napari_slip._compat`).
"""

from .._compat import preload_triton

preload_triton()
