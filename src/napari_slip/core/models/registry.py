"""Registry of SAM and CLIP weights: names, URLs, checksums, cache paths, loaders.

A model is named either by a registry name (``vit_b``; ``ViT-B-32:laion2b_s34b_b79k``)
or by the path of a local file. Named weights are downloaded once into the cache
folder (see :func:`~napari_slip.core.download.cache_dir`); a path is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..params import DEFAULT_CLIP, DEVICES
from .clip import ClipModel, load_clip_checkpoint, load_open_clip
from .download import cache_dir, download, file_sha256
from .promptable import PromptableSam
from .sam import SamConfig, load_sam


@dataclass(frozen=True)
class SamWeights:
    name: str
    url: str
    #: None where the authors publish no checksum (the file's SHA-256 is then recorded
    #: in each result's provenance instead).
    sha256: str | None
    size_mb: int
    description: str
    #: The publisher's xxh128 checksum where it publishes that instead (micro-sam).
    xxh128: str | None = None
    #: The file's name in the cache, where the URL's own would collide with another's.
    cache_name: str | None = None
    #: For microscopy (suggested for one-channel and 16-bit images).
    microscopy: bool = False

    @property
    def filename(self) -> str:
        return self.cache_name or self.url.rsplit("/", 1)[-1]


_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
_EFFICIENTVIT_BASE = "https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/"
_MICRO_SAM_BASE = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/"
SAM_MODELS: dict[str, SamWeights] = {
    w.name: w
    for w in (
        SamWeights(
            "vit_b",
            _SAM_BASE + "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            358,
            "SAM ViT-B (the default; SAM's fastest own encoder)",
        ),
        SamWeights(
            "vit_l",
            _SAM_BASE + "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1191,
            "SAM ViT-L",
        ),
        SamWeights(
            "vit_t",
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            None,  # MobileSAM's authors publish no checksum
            39,
            "MobileSAM (TinyViT encoder, ~13x fewer FLOPs than vit_b; masks a little coarser)",
        ),
        *(
            SamWeights(
                f"efficientvit_{size}",
                f"{_EFFICIENTVIT_BASE}efficientvit_sam_{size}.pt",
                None,  # EfficientViT-SAM's authors publish no checksum
                mb,
                f"EfficientViT-SAM-{size.upper()} ({text})",
            )
            for size, mb, text in (
                ("l0", 139, "encoder at 512 px, ~13x fewer FLOPs than vit_b"),
                ("l1", 191, "encoder at 512 px, ~10x fewer FLOPs than vit_b"),
                ("l2", 245, "encoder at 512 px, ~7x fewer FLOPs than vit_b"),
                ("xl0", 468, "encoder at 1,024 px, ~2.5x fewer FLOPs than vit_b"),
                ("xl1", 813, "encoder at 1,024 px, ~1.5x fewer FLOPs than vit_b"),
            )
        ),
        # micro-sam's SAMs fine-tuned on microscopy (Archit et al., Nature Methods 2025),
        # as its registry publishes them (micro_sam/util.py, models()): bioimage.io
        # files in SAM's own layout, checked by xxh128.
        SamWeights(
            "vit_b_lm",
            _MICRO_SAM_BASE + "diplomatic-bug/1.2/files/vit_b.pt",
            None,
            358,
            "micro-sam's SAM ViT-B for light microscopy (cells and nuclei: fluorescence, "
            "phase contrast, brightfield)",
            xxh128="fe9252a29f3f4ea53c15a06de471e186",
            cache_name="micro_sam_vit_b_lm.pt",
            microscopy=True,
        ),
        SamWeights(
            "vit_b_em_organelles",
            _MICRO_SAM_BASE + "noisy-ox/1.2/files/vit_b.pt",
            None,
            358,
            "micro-sam's SAM ViT-B for electron microscopy (mitochondria, nuclei and other "
            "organelles)",
            xxh128="f3bf2ed83d691456bae2c3f9a05fb438",
            cache_name="micro_sam_vit_b_em_organelles.pt",
            microscopy=True,
        ),
        SamWeights(
            "vit_h",
            _SAM_BASE + "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2445,
            "SAM ViT-H (best masks, slowest)",
        ),
    )
}

#: CLIP weights offered by name in the widget and ``napari-slip models``. Any other
#: open_clip ``MODEL:TAG`` pair works too.
CLIP_PRETRAINED: tuple[str, ...] = (
    "ViT-B-32:laion2b_s34b_b79k",
    "ViT-B-32:openai",
    "ViT-B-16:laion2b_s34b_b88k",
    "ViT-L-14:laion2b_s32b_b82k",
)


DownloadProgress = Callable[[int, int], None]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu. Others are checked to exist."""
    name = str(device or "auto")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            "device 'cuda' was asked for, but PyTorch sees no CUDA GPU; use 'cpu' or 'auto'."
        )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise InputError(
            "device 'mps' was asked for, but it is not available here; use 'cpu' or 'auto'."
        )
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InputError(f"Unknown device {name!r}; use {', '.join(DEVICES)}.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"Unknown device {name!r}; use {', '.join(DEVICES)}.") from None


def available_devices() -> list[str]:
    """The choices of :data:`~napari_slip.core.params.DEVICES` that work on this machine."""
    works = {
        "auto": True,
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    return [d for d in DEVICES if works[d]]


def _is_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith((".pth", ".pt", ".safetensors", ".bin"))


# --- SAM -----------------------------------------------------------------------------


def sam_cache_path(name: str) -> Path:
    return cache_dir() / "sam" / SAM_MODELS[name].filename


def resolve_sam(spec: str, progress: DownloadProgress | None = None) -> Path:
    """The local file for a SAM name or path, downloading a named model if needed."""
    if spec in SAM_MODELS:
        w = SAM_MODELS[spec]
        return download(
            w.url, sam_cache_path(spec), w.sha256, progress, what=f"SAM {spec}", xxh128=w.xxh128
        )
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    raise InputError(
        f"SAM model {spec!r} is neither a known name ({', '.join(SAM_MODELS)}) "
        "nor an existing file."
    )


@dataclass
class LoadedSam:
    model: torch.nn.Module
    config: SamConfig
    spec: str
    path: Path
    sha256: str

    @property
    def promptable(self) -> PromptableSam:
        """The model behind the promptable-SAM interface (made once)."""
        if getattr(self, "_promptable", None) is None:
            self._promptable = PromptableSam(self.model)
        return self._promptable

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "path": str(self.path),
            "sha256": self.sha256,
            "architecture": self.config.as_dict(),
        }


def load_sam_model(
    spec: str, device: torch.device | str = "cpu", progress: DownloadProgress | None = None
) -> LoadedSam:
    """Resolve (download if needed) and load a SAM model by name or path."""
    path = resolve_sam(spec, progress)
    model, config = load_sam(path, device)
    return LoadedSam(model, config, spec, path, file_sha256(path))


# --- CLIP ----------------------------------------------------------------------------


def _split_clip_name(spec: str) -> tuple[str, str]:
    if ":" not in spec:
        raise InputError(
            f"CLIP model {spec!r}: give MODEL:TAG (e.g. {DEFAULT_CLIP}) or the path of a "
            ".safetensors checkpoint."
        )
    name, tag = spec.split(":", 1)
    return name, tag


def _clip_source(spec: str) -> tuple[str, dict, list[str], Path]:
    """(model name, pretrained cfg, candidate URLs, cache path) for MODEL:TAG."""
    from ..._compat import guard_gui_process

    guard_gui_process()
    import open_clip

    name, tag = _split_clip_name(spec)
    if open_clip.get_model_config(name) is None:
        raise InputError(
            f"Unknown open_clip model {name!r} in {spec!r}; see open_clip.list_models()."
        )
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if not pcfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise InputError(
            f"open_clip has no pretrained tag {tag!r} for {name}; known tags: {tags}."
        )
    urls = []
    if pcfg.get("hf_hub"):
        repo = pcfg["hf_hub"].strip("/")
        base = f"https://huggingface.co/{repo}/resolve/main/"
        urls += [base + "open_clip_model.safetensors", base + "open_clip_pytorch_model.bin"]
    if pcfg.get("url"):
        urls.append(pcfg["url"])
    folder = cache_dir() / "clip" / f"{name}__{tag}"
    return name, pcfg, urls, folder


def split_clip_file(spec: str) -> tuple[str, Path] | None:
    """``MODEL:TAG=PATH`` (an official open_clip weight file, its architecture named) as
    ``("MODEL:TAG", PATH)``; None for any other spec."""
    if "=" not in spec:
        return None
    named, path = spec.split("=", 1)
    if ":" not in named or _is_path(named):
        return None
    return named.strip(), Path(path.strip()).expanduser()


def clip_cache_target(spec: str) -> tuple[str, Path]:
    """(URL, exact cache path) where MODEL:TAG's first weight file goes."""
    _, _, urls, folder = _clip_source(spec)
    return urls[0], folder / urls[0].rsplit("/", 1)[-1]


def clip_cached_file(spec: str) -> Path | None:
    """The cached weights of MODEL:TAG, if any."""
    _, _, urls, folder = _clip_source(spec)
    for url in urls:
        candidate = folder / url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate
    return None


def resolve_clip(
    spec: str, progress: DownloadProgress | None = None
) -> tuple[str | None, Path, dict]:
    """(open_clip model name or None for our checkpoints, local file, pretrained cfg)."""
    given = split_clip_file(spec)
    if given is not None:  # an official weight file by path, its architecture named
        name, pcfg, _, _ = _clip_source(given[0])
        if not given[1].is_file():
            raise InputError(f"The CLIP weight file {given[1]} (of {given[0]}) does not exist.")
        return name, given[1], pcfg
    if _is_path(spec) or Path(spec).expanduser().is_file():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(f"CLIP checkpoint {spec!r} does not exist.")
        return None, path, {}
    name, pcfg, urls, folder = _clip_source(spec)
    cached = clip_cached_file(spec)
    if cached is not None:
        return name, cached, pcfg
    errors = []
    for url in urls:
        target = folder / url.rsplit("/", 1)[-1]
        try:
            return name, download(url, target, None, progress, what=f"CLIP {spec}"), pcfg
        except Exception as exc:  # try the next mirror; report all if none works
            errors.append(exc)
    # Every source failed: the first message names the URL and where to put the file.
    raise errors[0]


@dataclass
class LoadedClip:
    clip: ClipModel
    spec: str
    path: Path
    sha256: str

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "path": str(self.path),
            "sha256": self.sha256,
            "metadata": self.clip.metadata,
        }


def resolve_all(specs: list[tuple[str, str]], progress: DownloadProgress | None = None) -> None:
    """Make sure every model file of ``specs`` (``("sam", spec)``, ``("clip", spec)``)
    is here, downloading what is missing, before any model work; every one that cannot
    be had is reported in one error (URL and exact path of each)."""
    from ..errors import SlipError, WeightsUnavailableError
    from .hubclip import hub_name, resolve_hub_clip

    failed: list[SlipError] = []
    for kind, spec in specs:
        try:
            if kind == "sam":
                resolve_sam(spec, progress)
            elif hub_name(spec) is not None:
                resolve_hub_clip(hub_name(spec), progress)
            else:
                resolve_clip(spec, progress)
        except WeightsUnavailableError as exc:
            failed.append(exc)
    if len(failed) == 1:
        raise failed[0]
    if failed:

        def joined(surface: str) -> str:
            return f"{len(failed)} models are missing. " + " ".join(
                f"({i}) {e.for_surface(surface)}" for i, e in enumerate(failed, start=1)
            )

        surfaces = {s: joined(s) for s in ("cli", "widget")}
        raise WeightsUnavailableError(joined("python"), surfaces=surfaces)


def load_clip_model(
    spec: str, device: torch.device | str = "cpu", progress: DownloadProgress | None = None
) -> LoadedClip:
    """Resolve (download if needed) and load CLIP by ``MODEL:TAG`` or checkpoint path."""
    from .hubclip import HUB_CLIPS, hub_name, load_hub_clip, resolve_hub_clip

    hub = hub_name(spec)
    if hub is not None:  # BiomedCLIP: open_clip's hub layout, its BERT's files beside
        folder = resolve_hub_clip(hub, progress)
        path = folder / HUB_CLIPS[hub].weights
        return LoadedClip(load_hub_clip(hub, folder, device), spec, path, file_sha256(path))
    name, path, pcfg = resolve_clip(spec, progress)
    if name is None:
        clip = load_clip_checkpoint(path, device)
    else:
        clip = load_open_clip(name, path, pcfg, device)
    return LoadedClip(clip, spec, path, file_sha256(path))
