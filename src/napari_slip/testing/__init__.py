"""Test tooling shared by the tests, the docs and the benchmarks.

- :mod:`.tiny`: tiny *random* SAM and CLIP checkpoints in the real file formats
  (plumbing only: random SAM weights keep no masks).
- :mod:`.scenes`: synthetic scenes with instance labels (shapes, nuclei).
- :mod:`.trained_sam`: a small SAM trained on those scenes, to judge mask quality.
"""

from .tiny import TINY_CLIP, TINY_SAM, blobs_image, write_tiny_clip, write_tiny_sam

__all__ = ["TINY_CLIP", "TINY_SAM", "blobs_image", "write_tiny_clip", "write_tiny_sam"]
