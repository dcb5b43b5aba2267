"""What a result records about how it was made: models and their hashes, every setting."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from ..._version import __version__
from ..params import CropParams, SelectionParams
from ..runtime.perf import stages_of
from .modelset import ModelSet
from .session import Candidates


def provenance(
    prompt: str,
    selection: SelectionParams,
    candidates: Candidates,
    models: ModelSet,
    templates: Sequence[str],
    crop_params: CropParams,
) -> dict:
    """The provenance of one selection from ``candidates`` (the models are loaded)."""
    made = candidates.source  # the source's own flags: SAM named where it decoded
    uses_map = selection.relevance_weight or made.get("uses_map")
    decoder = models.load("decoder") if uses_map else None
    return {
        "napari_slip_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "prompt": prompt,
        # Every field of the option groups (a new one is recorded without a line here).
        "selection": {
            **selection.as_dict(),
            "distractors": list(selection.distractors),
            "background": selection.background if selection.mode == "distractors" else None,
        },
        "templates": list(templates),
        "proposals": dict(candidates.source),
        "crops": crop_params.as_dict(),
        # The SAM that made the candidates, as recorded then: nothing loads here.
        "sam": candidates.proposals.sam if made.get("needs_sam") else None,
        "clip": models.load("clip").describe(),
        "decoder": None if decoder is None else decoder.describe(),
        "normalisation": dict(candidates.normalisation),
        "device": str(models.device),
        "precision": str(models.precision),
        # What ran per stage: auto's measured plan (or the one precision everywhere).
        "precision_stages": stages_of(models.precision),
    }


__all__ = ["provenance"]
