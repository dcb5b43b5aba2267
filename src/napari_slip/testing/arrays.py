"""Lazily read arrays for tests: prove that code reads regions, never the whole."""

from __future__ import annotations

import threading

import numpy as np


class CountingArray:
    """An array read on demand (like a zarr or dask array) that records the size of
    every read in ``reads``.

    With ``worker_reads_only``, reads on the main thread are not recorded: napari reads
    on it for display, the engine in its worker thread.
    """

    def __init__(self, data: np.ndarray, worker_reads_only: bool = False) -> None:
        self._data = data
        self.shape, self.dtype, self.ndim, self.size = data.shape, data.dtype, data.ndim, data.size
        self.worker_reads_only = worker_reads_only
        self.reads: list[int] = []

    def __getitem__(self, index):
        out = self._data[index]
        if not self.worker_reads_only or threading.current_thread() is not threading.main_thread():
            self.reads.append(out.size)
        return out


__all__ = ["CountingArray"]
