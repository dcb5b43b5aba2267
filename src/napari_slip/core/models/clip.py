"""CLIP models: open_clip architectures, our checkpoint format, and encoding.

Checkpoint format (written by fine-tuning, read everywhere): a safetensors file whose
metadata holds the open_clip model config as JSON under ``open_clip_config`` (the dict
open_clip keeps in its ``model_configs/*.json``), plus optional entries such as
``base_model``, ``class_names`` (JSON list), ``prompt_template``, ``preprocess_cfg``
(JSON with ``mean``/``std``). Any open_clip architecture, a tiny one included, loads
from such a file without executing code.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from ..runtime.json_files import JsonDamaged, parse_json
from .no_init import skip_random_init

CONFIG_KEY = "open_clip_config"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipModel:
    """A loaded CLIP model with what is needed to feed it.

    Attributes
    ----------
    model
        The open_clip model (eval mode).
    tokenizer
        Callable turning a list of strings into a token tensor.
    config
        The open_clip model config.
    image_size
        Side of the square images the vision tower takes.
    mean, std
        Per-channel normalisation of images in [0, 1].
    metadata
        What the checkpoint recorded (base model, class names, template, ...).
    """

    model: torch.nn.Module
    tokenizer: object
    config: dict
    image_size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    metadata: dict = field(default_factory=dict)
    #: ``fp32``, ``bf16``, ``fp16`` or ``int8``: the precision of encoding (see
    #: :meth:`set_precision`).
    precision: str = "fp32"
    #: Torch threads while encoding (None: the process's own; see ``Plan.threads``).
    threads: int | None = None

    def set_precision(self, precision: str) -> None:
        """Run inference in ``precision`` by casting the weights once.

        Cheaper than autocast, which casts every weight again on each call: for batches
        of CLIP crops and single prompts that recasting costs more than it saves. Use
        only for inference; fine-tuning keeps float32 weights.
        """
        from ..runtime.perf import Plan, stage_precision

        if isinstance(precision, Plan):  # a precision per stage: CLIP's own, its threads
            self.threads = precision.threads.get("clip")
        precision = stage_precision(precision, "clip")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        if self.device.type not in ("cpu", "cuda") or (
            precision == "int8" and self.device.type != "cpu"
        ):
            dtype, precision = torch.float32, "fp32"
        self.model.to(dtype)
        if precision == "int8":  # linear layers quantized, the rest fp32 (CPU only)
            from ..runtime.perf import quantize_int8

            quantize_int8(self.model)
        self.precision = precision

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, crops: list[np.ndarray]) -> torch.Tensor:
        """Square uint8 RGB crops of any size -> a normalised batch on the model's device."""
        size = self.image_size
        out = torch.empty((len(crops), 3, size, size), dtype=torch.float32)
        for i, crop in enumerate(crops):
            t = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
            t = F.interpolate(
                t, size=(size, size), mode="bicubic", antialias=True, align_corners=False
            )
            out[i] = t[0]
        out = out.clamp_(0, 255).div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((out - mean) / std).to(self.device)

    @torch.no_grad()
    def encode_images(self, crops: list[np.ndarray]) -> np.ndarray:
        """L2-normalised image embeddings (n, d) of square uint8 RGB crops."""
        if not crops:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        from ..runtime.perf import threads

        with threads(self.threads):
            feats = self.model.encode_image(self.preprocess(crops).to(self.dtype))
        return F.normalize(feats.float(), dim=-1).cpu().numpy()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings (n, d)."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        feats = self.model.encode_text(tokens)
        return F.normalize(feats.float(), dim=-1).cpu().numpy()

    @property
    def embed_dim(self) -> int:
        return int(self.config.get("embed_dim", 512))

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0


#: Bigger configs are refused before anything is built (ViT-bigG/14 has ~2.5 billion).
MAX_CLIP_PARAMETERS = 4_000_000_000


#: Sizes of an open_clip tower that must be positive numbers where given.
_SIZES = (
    "width",
    "layers",
    "heads",
    "patch_size",
    "image_size",
    "context_length",
    "vocab_size",
    "head_width",
    "mlp_ratio",
)


def estimated_parameters(config: dict) -> int:
    """A rough parameter count of an open_clip config, from widths and depths alone."""
    total = 0
    embed = config.get("embed_dim", 512)
    if isinstance(embed, bool) or not isinstance(embed, int) or embed <= 0:
        raise CheckpointError(
            f"The CLIP config's embed_dim must be a positive number; got {embed!r}."
        )
    for key in ("vision_cfg", "text_cfg"):
        cfg = config.get(key) or {}
        if not isinstance(cfg, dict):
            raise CheckpointError(f"The CLIP config's {key!r} is not a mapping.")
        for name in _SIZES:
            value = cfg.get(name)
            if isinstance(value, (int, float)) and (isinstance(value, bool) or value <= 0):
                raise CheckpointError(
                    f"The CLIP config's {key}.{name} must be a positive number; got {value!r}."
                )
        width, layers = (
            cfg.get("width", 768 if key == "vision_cfg" else 512),
            cfg.get("layers", 12),
        )
        if not isinstance(width, int) or not isinstance(layers, (int, list, tuple)):
            continue  # timm / HF towers: sizes live elsewhere
        depth = sum(layers) if isinstance(layers, (list, tuple)) else layers
        total += 12 * width * width * int(depth)
        if key == "text_cfg":
            total += int(cfg.get("vocab_size", 49408)) * width
    return total


def build_clip(config: dict) -> torch.nn.Module:
    """Instantiate an open_clip model (random weights) from its config dict.

    Configs describing more than :data:`MAX_CLIP_PARAMETERS` are refused before any
    memory is allocated (a small hostile file must not exhaust the machine).
    """
    if not isinstance(config, dict):
        raise CheckpointError("The CLIP config is not a mapping of open_clip options.")
    n = estimated_parameters(config)
    if n > MAX_CLIP_PARAMETERS:
        raise CheckpointError(
            f"The CLIP config describes a model of about {n / 1e9:.0f} billion parameters; "
            "refusing to build it. Is this file what you meant to load?"
        )
    from ..._compat import guard_gui_process

    guard_gui_process()
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(config)
    if "multimodal_cfg" in cfg:
        raise CheckpointError("CoCa models are not supported; use a contrastive CLIP model.")
    text_cfg = cfg.get("text_cfg", {})
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = False
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    custom = cfg.pop("custom_text", False) or "hf_model_name" in text_cfg
    cls = CustomTextCLIP if custom else CLIP
    try:
        model = cls(**cfg)
    except (TypeError, ValueError, AssertionError, AttributeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"The CLIP config does not describe an open_clip model ({str(exc)[:160]})."
        ) from None
    return model.eval()


def make_tokenizer(config: dict, model_name: str | None = None):
    """The tokenizer an open_clip config asks for."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    text_cfg = config.get("text_cfg", {})
    context = int(text_cfg.get("context_length", 77))
    if model_name:
        return open_clip.get_tokenizer(model_name, context_length=context)
    if text_cfg.get("hf_tokenizer_name"):
        return HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context)
    return SimpleTokenizer(context_length=context)


def _image_size(config: dict) -> int:
    size = config.get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def read_clip_metadata(path: str | os.PathLike) -> dict:
    """The metadata of one of our CLIP checkpoints, JSON values decoded.

    Raises
    ------
    CheckpointError
        If the file is not a safetensors file with an ``open_clip_config`` entry.
    """
    meta = read_safetensors_metadata(path)
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{path} has no '{CONFIG_KEY}' metadata: it is not a napari-slip CLIP checkpoint. "
            "An official open_clip weight file (e.g. open_clip_model.safetensors from the "
            "model's hub page) needs its architecture named: "
            f"ViT-B-32:laion2b_s34b_b79k={path} (--clip, clip=...), or put it where "
            "`napari-slip models` shows."
        )
    return meta


def read_safetensors_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a safetensors file, JSON values decoded (others kept as text).

    Raises
    ------
    CheckpointError
        If the file is not a readable safetensors file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({type(exc).__name__})."
        ) from None
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = parse_json(value, kind=object)
        except JsonDamaged:
            meta[key] = value
    return meta


def load_clip_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> ClipModel:
    """Load a CLIP checkpoint in our format (safetensors + ``open_clip_config``)."""
    from safetensors.torch import load_file

    meta = read_clip_metadata(path)
    config = meta[CONFIG_KEY]
    if not isinstance(config, dict) or "vision_cfg" not in config:
        raise CheckpointError(f"{path}: '{CONFIG_KEY}' is not an open_clip model config.")
    with skip_random_init():  # every weight comes from the file (strict load)
        model = build_clip(config)
    state = load_file(str(path), device="cpu")
    _load_state(model, state, path)
    model.requires_grad_(False)  # inference only; fine-tuning enables what it trains
    pre = meta.get("preprocess_cfg") or {}
    if not isinstance(pre, dict):
        raise CheckpointError(f"{path}: 'preprocess_cfg' is not a mapping with mean and std.")
    for key in ("mean", "std"):
        value = pre.get(key)
        if value is None:
            continue
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        ok = ok and all(isinstance(v, (int, float)) and np.isfinite(v) for v in value)
        if not ok or (key == "std" and min(value) <= 0):
            raise CheckpointError(
                f"{path}: preprocess_cfg {key!r} must be three finite numbers"
                f"{' above 0' if key == 'std' else ''}; got {value!r}."
            )
    return ClipModel(
        model=model.to(device).eval(),
        tokenizer=make_tokenizer(config),
        config=config,
        image_size=_image_size(config),
        mean=tuple(pre.get("mean", OPENAI_MEAN)),
        std=tuple(pre.get("std", OPENAI_STD)),
        metadata={k: v for k, v in meta.items() if k != CONFIG_KEY},
    )


def load_open_clip(
    model_name: str,
    weights: str | os.PathLike,
    pretrained_cfg: dict,
    device: str | torch.device = "cpu",
) -> ClipModel:
    """Load an open_clip built-in architecture with weights from a local file."""
    import open_clip
    from open_clip.factory import load_checkpoint

    config = open_clip.get_model_config(model_name)
    if config is None:
        raise CheckpointError(
            f"Unknown open_clip model {model_name!r}; see open_clip.list_models()."
        )
    config = copy.deepcopy(config)
    if pretrained_cfg.get("quick_gelu"):
        config["quick_gelu"] = True
    with skip_random_init():  # every weight comes from the file (strict load)
        model = build_clip(config)
    try:
        load_checkpoint(model, str(weights), weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Could not load {weights} into {model_name} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). If it is a cached "
            "download, it may be incomplete: delete it to download it again."
        ) from None
    model.requires_grad_(False)  # inference only; fine-tuning enables what it trains
    return ClipModel(
        model=model.to(device).eval(),
        tokenizer=make_tokenizer(config, model_name),
        config=config,
        image_size=_image_size(config),
        mean=tuple(pretrained_cfg.get("mean", OPENAI_MEAN)),
        std=tuple(pretrained_cfg.get("std", OPENAI_STD)),
        metadata={"base_model": model_name},
    )


def _load_state(
    model: torch.nn.Module, state: dict, path, config_name: str = "open_clip_config"
) -> None:
    """``model.load_state_dict(state, strict=True)``, a mismatch said in one line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)[:200]]
        raise CheckpointError(
            f"The weights in {path} do not fit its {config_name} ({first[0].strip()})."
        ) from None


def save_clip_checkpoint(
    model: torch.nn.Module,
    config: dict,
    path: str | os.PathLike,
    metadata: dict | None = None,
) -> Path:
    """Write ``model`` in our checkpoint format.

    Parameters
    ----------
    model
        An open_clip model whose architecture ``config`` describes.
    config
        The open_clip model config (stored as ``open_clip_config``).
    path
        Output ``.safetensors`` file; written atomically.
    metadata
        Extra entries (values JSON-encoded unless already strings): ``base_model``,
        ``class_names``, ``prompt_template``, ``preprocess_cfg``, ``metrics``, ...
    """
    from safetensors.torch import save_file

    path = Path(path)
    meta = {CONFIG_KEY: json.dumps(config)}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    from ..io import Outputs

    Outputs({"checkpoint": path}, overwrite=True).write(
        {"checkpoint": lambda tmp: save_file(state, str(tmp), metadata=meta)}
    )
    return path
