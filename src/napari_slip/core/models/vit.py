"""SAM's ViT image encoder at any input side.

``segment_anything``'s ``ImageEncoderViT`` adds its absolute positional embedding
(64 x 64 tokens for a 1,024 px input) to the patch tokens as it is, so it takes only
the size it was trained at. :class:`SamViT` interpolates the embedding to the tokens
it is given (bicubic, as ViTDet and EfficientSAM do; the last size's kept); the
global-attention blocks' relative positions are interpolated by ``segment_anything``
itself (``get_rel_pos``). At the trained size it is ``ImageEncoderViT`` exactly. Same
weights and state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT


def resized_positions(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(1, H, W, C) positional embedding -> (1, h, w, C), bicubic over the grid."""
    if tuple(pos_embed.shape[1:3]) == (h, w):
        return pos_embed
    grid = pos_embed.permute(0, 3, 1, 2).float()
    out = F.interpolate(grid, (h, w), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).to(pos_embed.dtype)


class SamViT(ImageEncoderViT):
    """``ImageEncoderViT`` whose positional embedding follows the input's size."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resized: dict = {}

    def positions(self, h: int, w: int) -> torch.Tensor:
        """The positional embedding for an ``h`` x ``w`` token grid (the last size's
        kept while the weights are these; made afresh, with its gradient, in training)."""
        if (h, w) == tuple(self.pos_embed.shape[1:3]):
            return self.pos_embed
        if torch.is_grad_enabled() and self.pos_embed.requires_grad:
            return resized_positions(self.pos_embed, h, w)
        key = (h, w, self.pos_embed.dtype, self.pos_embed.data_ptr(), self.pos_embed._version)
        if key not in self._resized:
            with torch.no_grad():
                self._resized = {key: resized_positions(self.pos_embed, h, w)}
        return self._resized[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.positions(x.shape[1], x.shape[2])
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
