"""The settings of training runs: fine-tuning CLIP (:class:`FinetuneParams`) and
training a text-conditioned decoder (:class:`DecoderParams`). Re-exported by
:mod:`.params`, beside the settings of segmentation runs."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError
from .params_base import _check_template, _Params, option

#: What fine-tuning can train (see :class:`FinetuneParams`).
TRAINABLE = ("all", "last", "proj")


@dataclass(frozen=True)
class FinetuneParams(_Params):
    """Training options.

    ``train``: ``all`` (every weight), ``last`` (the last ``last_blocks`` transformer
    blocks of both towers, their final norms and the projections) or ``proj``
    (projections and temperature only: fastest, least risk of forgetting).

    Attributes
    ----------
    last_blocks
        Blocks per tower trained with ``train="last"``.
    val_fraction
        Share of source images held out for validation (objects of one image stay on
        one side of the split).
    patience
        Stop after this many epochs without a better validation accuracy.
    template
        How a class becomes text, e.g. ``"a photo of {}."``.
    augment
        Random flips and quarter turns of the crops.
    seed
        Makes the split, shuffling and augmentation repeatable.
    """

    epochs: int = option(20, "passes over the training data")
    lr: float = option(1e-5, "learning rate")
    batch_size: int = option(32, "crops per step")
    weight_decay: float = option(0.05, "AdamW weight decay")
    train: str = option(
        "last",
        "what to train: the last blocks and projections, the projections only (fastest "
        "on a CPU) or everything",
        TRAINABLE,
    )
    last_blocks: int = option(2, "transformer blocks per tower trained with --train last")
    val_fraction: float = option(0.2, "share of images held out for validation")
    patience: int = option(5, "stop after this many epochs without improvement")
    template: str = option("a photo of {}.", "how a class name becomes text")
    augment: bool = option(True, "random flips and quarter turns of the crops")
    seed: int = option(0, "makes the split, shuffling and augmentation repeatable")

    def __post_init__(self) -> None:
        if self.train not in TRAINABLE:
            raise InputError(f"train must be one of {', '.join(TRAINABLE)}; got {self.train!r}.")
        if self.epochs < 1 or self.batch_size < 2:
            raise InputError("epochs must be >= 1 and batch_size >= 2.")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1); got {self.val_fraction}.")
        if self.lr <= 0:
            raise InputError(f"lr must be positive; got {self.lr}.")
        _check_template(self.template)


#: Losses a decoder can be trained with (see :class:`DecoderParams`).
LOSSES = ("bce", "dice", "both")


@dataclass(frozen=True)
class DecoderParams(_Params):
    """Options of training a text-conditioned decoder (see
    :mod:`napari_slip.core.training.decoder`).

    The default loss is BCE: on the synthetic domain it gave the best held-out IoU of
    the three (docs/performance.md has the comparison, as seed 003 reported it; there
    Dice won).
    """

    epochs: int = option(40, "passes over the training views")
    lr: float = option(2e-3, "learning rate")
    batch_size: int = option(32, "views per step")
    loss: str = option("bce", "bce, dice, or their sum (both)", LOSSES)
    dim: int = option(64, "width of the decoder", bounds=(8, 1024))
    window: int | None = option(
        None,
        "view side in image pixels the decoder learns at (default: CLIP's input size)",
        bounds=(8, 4096),
    )
    val_fraction: float = option(0.2, "share of images held out for validation")
    patience: int = option(6, "stop after this many epochs without a better validation IoU")
    template: str = option("a photo of {}.", "how a class name becomes text")
    augment: bool = option(True, "also learn from mirrored views")
    seed: int = option(0, "makes the split, shuffling and initialisation repeatable")

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch_size must be at least 1.")
        if self.lr <= 0:
            raise InputError(f"lr must be positive; got {self.lr}.")
        if self.dim < 8 or self.dim % 4:
            raise InputError(f"dim must be a multiple of 4, at least 8; got {self.dim}.")
        if self.window is not None and self.window < 8:
            raise InputError(f"window must be at least 8 pixels; got {self.window}.")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1); got {self.val_fraction}.")
        if self.patience < 1:
            raise InputError(f"patience must be at least 1; got {self.patience}.")
        _check_template(self.template)
        self._check_bounds()


__all__ = ["LOSSES", "TRAINABLE", "DecoderParams", "FinetuneParams"]
