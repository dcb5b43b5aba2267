"""CLIPs published on the Hugging Face hub in open_clip's layout, named: BiomedCLIP.

BiomedCLIP (Zhang et al. 2023; MIT licence) is a CLIP trained on 15 million
biomedical figure-caption pairs: a timm ViT-B/16 image tower and a Hugging Face BERT
text tower (PubMedBERT, context 256, embedding 512). Its hub repository holds
``open_clip_config.json`` and ``open_clip_pytorch_model.bin``; the text tower's
architecture and tokenizer come from the BERT's own repository (``config.json``,
``vocab.txt``). All four files live in one cache folder
(``CACHE/clip/biomedclip/``, the BERT's in ``text/``), so the model loads offline
once they are there; offline before that, one message names every file, its URL and
the exact path to put it at. The text tower needs ``transformers``
(``pip install "napari-slip[biomed]"``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, InputError, WeightsUnavailableError
from ..runtime.json_files import JsonDamaged, read_json

#: Where the hub's files are fetched from (a test points it at 127.0.0.1).
HUB = "https://huggingface.co"


@dataclass(frozen=True)
class HubClip:
    """A CLIP on the hub: its repository, weights file and text tower's repository."""

    name: str
    repo: str
    text_repo: str
    description: str
    weights: str = "open_clip_pytorch_model.bin"

    def files(self, folder: Path) -> list[tuple[str, Path]]:
        """(URL, local path) of every file the model needs."""
        own = f"{HUB}/{self.repo}/resolve/main/"
        text = f"{HUB}/{self.text_repo}/resolve/main/"
        return [
            (own + "open_clip_config.json", folder / "open_clip_config.json"),
            (own + self.weights, folder / self.weights),
            (text + "config.json", folder / "text" / "config.json"),
            (text + "vocab.txt", folder / "text" / "vocab.txt"),
        ]


HUB_CLIPS: dict[str, HubClip] = {
    "biomedclip": HubClip(
        "biomedclip",
        "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
        "BiomedCLIP: trained on 15 M biomedical figure-caption pairs (PubMed Central); "
        "ViT-B/16 + PubMedBERT; needs napari-slip[biomed]",
    ),
}
#: Other names users give for the same models (open_clip's own hub name).
ALIASES = {f"hf-hub:{clip.repo}": name for name, clip in HUB_CLIPS.items()}


def hub_name(spec: str) -> str | None:
    """The hub CLIP a spec names (``biomedclip`` or its ``hf-hub:`` name), or None."""
    if not isinstance(spec, str):
        return None
    spec = spec.strip()
    return spec if spec in HUB_CLIPS else ALIASES.get(spec)


def hub_folder(name: str) -> Path:
    from .download import cache_dir

    return cache_dir() / "clip" / name


def missing_files(name: str) -> list[tuple[str, Path]]:
    """The files of ``name`` not in the cache yet."""
    return [(u, p) for u, p in HUB_CLIPS[name].files(hub_folder(name)) if not p.is_file()]


def resolve_hub_clip(name: str, progress=None) -> Path:
    """The cache folder of ``name``, every file downloaded (each verified against the
    hub's checksum where it sends one). Offline, one message lists every missing file
    with its URL and where to put it."""
    from .download import download

    _require_transformers(name)  # before 800 MB of downloads it could not use
    missing = missing_files(name)
    for url, path in missing:
        try:
            download(url, path, None, progress, what=f"CLIP {name} ({path.name})")
        except WeightsUnavailableError:
            still = missing_files(name)
            listing = "; ".join(f"{u} -> {p}" for u, p in still)
            message = (
                f"CLIP {name} needs {len(still)} file(s) that could not be downloaded "
                f"(offline?). Fetch each and put it at the path given: {listing}."
            )
            raise WeightsUnavailableError(message) from None
    return hub_folder(name)


def _require_transformers(name: str) -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise InputError(
            f"CLIP {name} has a Hugging Face text tower, which needs the transformers "
            'package: pip install "napari-slip[biomed]".'
        ) from None


def load_hub_clip(name: str, folder: Path, device="cpu"):
    """The :class:`~.clip.ClipModel` of a hub CLIP from its cache folder (offline)."""
    import torch

    from .clip import OPENAI_MEAN, OPENAI_STD, ClipModel, build_clip

    _require_transformers(name)
    clip = HUB_CLIPS[name]
    try:
        config = read_json(folder / "open_clip_config.json")
        model_cfg = copy.deepcopy(config["model_cfg"])
        preprocess = config.get("preprocess_cfg", {})
        text_cfg = model_cfg["text_cfg"]
    except (OSError, JsonDamaged, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{folder / 'open_clip_config.json'} is not an open_clip hub config "
            f"({type(exc).__name__}: {exc}); delete it to download it again."
        ) from None
    text = str(folder / "text")
    # The text tower's architecture and tokenizer: the local BERT files, never the hub.
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = text
    model = build_clip(model_cfg)
    weights = folder / clip.weights
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        # Position ids are buffers some transformers versions keep and others do not.
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.endswith("position_ids")}
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise CheckpointError(
            f"Could not load {weights} into {name} ({type(exc).__name__}: {first}). If it "
            "is a cached download, it may be incomplete: delete it to download it again."
        ) from None
    model.requires_grad_(False)
    from open_clip.tokenizer import HFTokenizer

    context = int(text_cfg.get("context_length", 256))
    tokenizer = HFTokenizer(text, context_length=context)
    size = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return ClipModel(
        model=model.to(device).eval(),
        tokenizer=tokenizer,
        config=model_cfg,
        image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
        mean=tuple(preprocess.get("mean", OPENAI_MEAN)),
        std=tuple(preprocess.get("std", OPENAI_STD)),
        metadata={"base_model": f"hf-hub:{clip.repo}"},
    )


__all__ = [
    "ALIASES",
    "HUB",
    "HUB_CLIPS",
    "HubClip",
    "hub_name",
    "load_hub_clip",
    "missing_files",
    "resolve_hub_clip",
]
