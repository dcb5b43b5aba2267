"""Relevance maps at real size (run by hand, not a test).

    python benchmarks/bench_relevance.py [--size 1024]

CLIP ViT-B/32 with random weights (the cost does not depend on the values), fp32, on
a size x size image: the first map of an image (CLIP's patch features of every window,
then the map) against a new prompt on the same image (one text encoding, a matrix
product and the stitching), in one run. Prints the windows used.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    import open_clip
    import torch

    from napari_slip.core.models.clip import build_clip, save_clip_checkpoint
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.runtime.perf import tune_allocator

    tune_allocator()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = open_clip.get_model_config("ViT-B-32")
        clip = save_clip_checkpoint(build_clip(config), config, Path(tmp) / "clip.safetensors")
        seg = Segmenter("/unused/sam.pth", str(clip), "cpu", precision="fp32", disk_cache=False)
        image = np.random.default_rng(0).integers(0, 255, (args.size, args.size, 3), np.uint8)
        seg.set_image(image)
        seg.relevance("warm up the text tower")  # loads CLIP; patch features computed
        seg.set_image(image[::-1].copy())  # a new image: features again
        start = time.perf_counter()
        seg.relevance("nucleus")
        first = time.perf_counter() - start
        start = time.perf_counter()
        seg.relevance("mitotic nucleus")
        again = time.perf_counter() - start
        windows = seg.stats["relevance_windows"] // 2
    print(
        f"{args.size} x {args.size} image, CLIP ViT-B/32 (random weights), fp32, "
        f"{torch.get_num_threads()} threads: {windows} windows"
    )
    print(f"first map of an image          {first:7.2f} s")
    print(f"a new prompt on the same image {again:7.3f} s   (target < 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
