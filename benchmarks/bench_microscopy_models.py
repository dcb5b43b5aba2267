"""What BiomedCLIP costs against the default CLIP, on this CPU (run by hand, not a test).

    python benchmarks/bench_microscopy_models.py [--json benchmarks/results/NAME.json]

Real weights cannot be downloaded here, so both CLIPs are built at their full size
with random weights (the cost of a forward pass does not depend on the weights):
open_clip ViT-B-32 (the default CLIP) and BiomedCLIP's architecture (timm
``vit_base_patch16_224`` + a BERT-base text tower of PubMedBERT's size, context 256,
embedding 512), loaded through napari-slip's own BiomedCLIP loader from files in the
hub's layout. Measured through ``ClipModel.encode_images`` / ``encode_texts``, as the
pipeline calls them: 64 crops (what a SAM grid's candidates of one image cost), 8
prompt templates, and one image's training-free relevance map (1,024 px). fp32, the
process's default threads; the best of 3. micro-sam's SAMs are SAM ViT-B: they cost
what ``vit_b`` costs (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def best(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def full_size_biomedclip(folder: Path) -> Path:
    """BiomedCLIP's architecture at its own size, random weights, in the hub layout."""
    import torch
    from transformers import BertConfig

    from napari_slip.core.models.clip import build_clip
    from napari_slip.testing.tiny import _TINY_VOCAB

    text = folder / "text"
    text.mkdir(parents=True, exist_ok=True)
    (text / "vocab.txt").write_text("\n".join(_TINY_VOCAB) + "\n")
    BertConfig(vocab_size=30522, max_position_embeddings=512).to_json_file(
        str(text / "config.json")
    )
    model_cfg = {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch16_224",
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": str(text),
            "hf_tokenizer_name": str(text),
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    torch.save(build_clip(model_cfg).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import open_clip
    import torch

    from napari_slip.core.models.clip import ClipModel, build_clip, make_tokenizer
    from napari_slip.core.models.hubclip import load_hub_clip
    from napari_slip.core.pipeline.relevance import patch_features
    from napari_slip.core.runtime.perf import cpu_info

    print(f"CPU: {dict(cpu_info())}, torch threads {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(64)]
    windows = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(16)]
    prompts = [
        f"a photo of a {w}."
        for w in ("cell", "nucleus", "mitotic nucleus", "membrane", "blob", "ring", "star", "body")
    ]
    config = open_clip.get_model_config("ViT-B-32")
    default = ClipModel(
        model=build_clip(config).eval(),
        tokenizer=make_tokenizer(config),
        config=config,
        image_size=224,
    )
    with tempfile.TemporaryDirectory() as tmp:
        biomed = load_hub_clip("biomedclip", full_size_biomedclip(Path(tmp)))
    out = {"cpu": dict(cpu_info()), "threads": torch.get_num_threads()}
    for name, clip in (("ViT-B-32 (default)", default), ("BiomedCLIP", biomed)):
        params = sum(p.numel() for p in clip.model.parameters())
        row = {
            "parameters_millions": round(params / 1e6, 1),
            "fp32_megabytes": round(params * 4 / 1e6),
            "64_crops_s": best(lambda c=clip: c.encode_images(crops)),
            "8_prompts_s": best(lambda c=clip: c.encode_texts(prompts)),
            "16_relevance_windows_s": best(lambda c=clip: patch_features(c, windows)),
        }
        out[name] = row
        print(
            f"{name}: {row['parameters_millions']} M parameters ({row['fp32_megabytes']} MB "
            f"fp32); 64 crops {row['64_crops_s']:.2f} s; 8 prompts {row['8_prompts_s']:.3f} "
            f"s; relevance, 16 windows {row['16_relevance_windows_s']:.2f} s"
        )
    ratio = out["BiomedCLIP"]["64_crops_s"] / out["ViT-B-32 (default)"]["64_crops_s"]
    print(f"BiomedCLIP's crops cost {ratio:.1f}x the default CLIP's")
    out["crop_cost_ratio"] = ratio
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
