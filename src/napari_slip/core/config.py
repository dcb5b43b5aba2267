"""One run, one configuration: every setting of a segmentation run in one frozen object.

:class:`RunConfig` gathers what a run uses (models, what to find, where candidates
come from, selection, crops, tiles, normalisation) and checks the whole of it when it
is made, the combinations included, so that a bad run is refused with one line
*before any model loads*. Every entry point builds one: :func:`napari_slip.segment`,
:meth:`Segmenter.segment <napari_slip.core.pipeline.segmenter.Segmenter.segment>`,
the widget and ``segment_in_viewer`` (through their request), :func:`napari_slip.batch`
and the command line; the engine then takes it whole, as an argument
(:func:`napari_slip.core.pipeline.run.iter_run`, through
:meth:`~napari_slip.core.pipeline.segmenter.Segmenter.scope`): nothing of it is set on
the segmenter.

A new option is one field in one parameter dataclass of :mod:`.params` (the command
line's flag and the widget's field are generated from its metadata), its check here if
it interacts with another, and the code that uses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import InputError
from .params import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    DEVICES,
    PRECISIONS,
    CropParams,
    GuidedParams,
    NormalisationParams,
    SamProposalParams,
    SelectionParams,
    StackParams,
    TileParams,
    check_options,
    parse_phrases,
)
from .params_base import check_templates
from .proposal_kinds import PROPOSAL_KINDS, proposal_kind

#: The side SAM's own models (every registry name) work at; a file's is read when it loads.
SAM_INPUT_SIZE = 1024


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith((".pth", ".pt", ".safetensors", ".bin"))


@dataclass(frozen=True)
class Models:
    """Which models a run uses, where, and in which arithmetic.

    ``sam`` and ``clip`` are registry names or paths of local files; ``decoder`` is the
    path of a trained decoder (or None). Files are checked to exist here; their
    contents when they load.
    """

    sam: str = DEFAULT_SAM
    clip: str = DEFAULT_CLIP
    device: str = "auto"
    precision: str = "auto"
    decoder: str | None = None

    def __post_init__(self) -> None:
        for name in ("sam", "clip"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif not isinstance(value, str) or not value.strip():
                raise InputError(f"{name} must be a model name or a file path; got {value!r}.")
        if isinstance(self.decoder, os.PathLike):
            object.__setattr__(self, "decoder", os.fspath(self.decoder))
        if self.decoder == "":
            object.__setattr__(self, "decoder", None)
        if self.decoder is not None and not isinstance(self.decoder, str):
            raise InputError(f"decoder must be a file path; got {self.decoder!r}.")
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}; got {self.device!r}.")
        if self.precision not in PRECISIONS:
            raise InputError(
                f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}."
            )
        from .models.hubclip import hub_name

        named = hub_name(self.clip) is not None  # biomedclip and its hf-hub: name
        from .models.registry import split_clip_file

        given = split_clip_file(self.clip)  # MODEL:TAG=PATH: an official weight file
        if given is not None and not given[1].is_file():
            raise InputError(f"The CLIP weight file {given[1]} (of {given[0]}) does not exist.")
        named = named or given is not None
        if (
            not named
            and _looks_like_path(self.clip)
            and not Path(self.clip).expanduser().is_file()
        ):
            raise InputError(f"CLIP checkpoint {self.clip!r} does not exist.")
        if not named and not _looks_like_path(self.clip) and ":" not in self.clip:
            raise InputError(
                f"CLIP model {self.clip!r}: give MODEL:TAG (e.g. {DEFAULT_CLIP}), biomedclip, "
                "or the path of a .safetensors checkpoint."
            )
        if self.decoder is not None and not Path(self.decoder).expanduser().is_file():
            raise InputError(f"The decoder file {self.decoder} does not exist.")

    def check_sam(self) -> None:
        """Refuse a SAM that is neither a known name nor an existing file."""
        from .models.registry import SAM_MODELS

        if self.sam not in SAM_MODELS and not Path(self.sam).expanduser().is_file():
            raise InputError(
                f"SAM model {self.sam!r} is neither a known name ({', '.join(SAM_MODELS)}) "
                "nor an existing file."
            )

    @property
    def sam_input_size(self) -> int | None:
        """The side SAM works at, where known without loading it (registry names)."""
        return None if _looks_like_path(self.sam) else SAM_INPUT_SIZE


def _names_a_concept_file(prompt) -> bool:
    """A prompt that is a path (or text) ending in ``.concept``."""
    if isinstance(prompt, os.PathLike):
        prompt = os.fspath(prompt)
    return isinstance(prompt, str) and prompt.strip().lower().endswith(".concept")


@dataclass(frozen=True)
class Target:
    """What to find: the prompt, the phrases that compete with it, and how text is made
    of them; or a concept (classes shown by examples, :mod:`~.concepts`).

    Parameters
    ----------
    prompt
        What to find, e.g. ``"nucleus"``.
    distractors
        Phrases that compete with the prompt in ``distractors`` mode.
    background
        The phrase every object competes with too in that mode ("" for none).
    templates
        Prompt templates (each with one ``{}``); None: the CLIP's own, else
        ``"a photo of {}."``.
    concept
        A :class:`~.concepts.Concept` to find instead of (or with) the text: give it as
        the prompt (``Target(concept)``); its classes compete with each other and "none".
    concept_class
        Keep only this class of the concept (default: objects of any of its classes).
    """

    prompt: str
    distractors: tuple[str, ...] = ()
    background: str = SelectionParams.default("background")
    templates: tuple[str, ...] | None = None
    concept: Any = field(default=None, compare=False)
    concept_class: str | None = None

    def __post_init__(self) -> None:
        from .concepts import Concept, ConceptQuery

        if _names_a_concept_file(self.prompt):  # "cells.concept" is a file, not a text
            path = Path(self.prompt).expanduser()
            if not path.is_file():
                raise InputError(
                    f"{str(self.prompt)!r} names a concept file, but there is no file "
                    f"{path.resolve()}: give its path (or Concept.load(path))."
                )
            object.__setattr__(self, "prompt", Concept.load(path))
        if isinstance(self.prompt, ConceptQuery):
            object.__setattr__(self, "concept_class", self.prompt.class_name)
            object.__setattr__(self, "prompt", self.prompt.concept)
        if isinstance(self.prompt, Concept):
            object.__setattr__(self, "concept", self.prompt)
            object.__setattr__(self, "prompt", self.prompt.name)
        if self.concept is not None:
            query = ConceptQuery(self.concept, self.concept_class)  # checks the class
            object.__setattr__(self, "prompt", query.name)
            if self.distractors:
                raise InputError(
                    "A concept's classes compete with each other and with 'none': add a "
                    "distractor as a class or as negative examples, not as a phrase."
                )
        elif self.concept_class is not None:
            raise InputError("concept_class needs a concept: give the concept as the prompt.")

        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
        object.__setattr__(self, "distractors", parse_phrases(self.distractors))
        if not isinstance(self.background, str):
            raise InputError(f"background must be a phrase; got {self.background!r}.")
        if self.templates is not None:
            templates = (self.templates,) if isinstance(self.templates, str) else self.templates
            object.__setattr__(self, "templates", check_templates(templates))

    @property
    def query(self) -> Any:
        """What selection looks for: the prompt, or a :class:`~.concepts.ConceptQuery`."""
        if self.concept is None:
            return self.prompt
        from .concepts import ConceptQuery

        return ConceptQuery(self.concept, self.concept_class)


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one segmentation run, validated as a whole.

    Parameters
    ----------
    target
        What to find (:class:`Target`): the prompt, its competitors, the templates.
    models
        The models (:class:`Models`).
    proposals
        Where candidates come from: one of :data:`~.params.PROPOSALS`.
    selection
        Which candidates are kept (its distractors and background are the target's).
    sam_params, tile_params, guided_params, crop_params, normalisation
        The options of SAM's grid, of tiles, of guided proposals, of crops and of the
        image's intensities.
    relevance
        Also make the prompt's relevance map.
    stack_params
        How a stack's planes' objects become its objects (linked across Z and T).
    """

    target: Target
    models: Models = field(default_factory=Models)
    proposals: str = "sam"
    selection: SelectionParams = field(default_factory=SelectionParams)
    sam_params: SamProposalParams = field(default_factory=SamProposalParams)
    tile_params: TileParams = field(default_factory=TileParams)
    guided_params: GuidedParams = field(default_factory=GuidedParams)
    crop_params: CropParams = field(default_factory=CropParams)
    normalisation: NormalisationParams = field(default_factory=NormalisationParams)
    relevance: bool = False
    stack_params: StackParams = field(default_factory=StackParams)

    def __post_init__(self) -> None:
        if isinstance(self.target, str):  # RunConfig("nucleus", ...): the prompt alone
            object.__setattr__(self, "target", Target(self.target))
        kinds = {
            "target": Target,
            "models": Models,
            "selection": SelectionParams,
            "sam_params": SamProposalParams,
            "tile_params": TileParams,
            "guided_params": GuidedParams,
            "crop_params": CropParams,
            "normalisation": NormalisationParams,
            "stack_params": StackParams,
        }
        for name, kind in kinds.items():
            if not isinstance(getattr(self, name), kind):
                raise InputError(
                    f"{name} must be a {kind.__name__}; got {type(getattr(self, name)).__name__}."
                )
        if proposal_kind(self.proposals) is None:
            given = self.proposals
            shown = given if isinstance(given, str) else type(given).__name__
            raise InputError(
                f"proposals must be one of {', '.join(PROPOSAL_KINDS)}; got {shown!r}. To use "
                "a label image's objects, pass it as labels=..."
            )
        target, selection = self.target, self.selection
        if (selection.distractors, selection.background) != (
            target.distractors,
            target.background,
        ):
            if selection.distractors or selection.background != SelectionParams.default(
                "background"
            ):
                raise InputError(
                    "Give the distractors and the background phrase once, in the target "
                    "(Target(prompt, distractors=..., background=...))."
                )
            phrases = {"distractors": target.distractors, "background": target.background}
            object.__setattr__(self, "selection", replace(selection, **phrases))
        if self.target.concept is not None:
            if self.selection.relevance_weight:
                raise InputError("relevance_weight works with a text prompt, not a concept.")
            # A concept keeps what its classifier says: the distractors rule over classes.
            object.__setattr__(self, "selection", replace(self.selection, mode="distractors"))
        self._check_selection()
        self._check_tiles()
        if self.needs_sam:
            self.models.check_sam()

    def _check_selection(self) -> None:
        selection, prompt = self.selection, self.prompt.strip().casefold()
        if selection.mode != "distractors" or self.target.concept is not None:
            return
        same = [d for d in selection.distractors if d.casefold() == prompt]
        if same:
            raise InputError(
                f"The distractor {same[0]!r} is the prompt itself, so nothing could beat "
                "it; remove it from the distractors."
            )
        if selection.background.strip().casefold() == prompt:
            raise InputError(
                f"The background phrase {selection.background!r} is the prompt itself; "
                "choose another background phrase."
            )

    def _check_tiles(self) -> None:
        tiles = self.tile_params
        if tiles.tiles == "off" or not self.needs_sam:
            return
        size = tiles.tile_size or self.models.sam_input_size
        if size is not None:
            tiles.checked_size(size)

    @property
    def prompt(self) -> str:
        return self.target.prompt

    @property
    def query(self) -> Any:
        """What selection looks for: the prompt, or a :class:`~.concepts.ConceptQuery`."""
        return self.target.query

    @property
    def templates(self) -> tuple[str, ...] | None:
        return self.target.templates

    @property
    def needs_sam(self) -> bool:
        """Whether the run decodes SAM (its grid, its tiles, or guided points)."""
        return PROPOSAL_KINDS[self.proposals].needs_sam

    def with_selection(self, selection: SelectionParams) -> RunConfig:
        """The same run with other selection settings (their distractors and
        background phrase become the target's; validated again)."""
        phrases = {"distractors": selection.distractors, "background": selection.background}
        return replace(self, target=replace(self.target, **phrases), selection=selection)

    def with_prompt(self, prompt: str) -> RunConfig:
        """The same run for another prompt (validated again)."""
        return replace(self, target=replace(self.target, prompt=prompt))

    @classmethod
    def build(cls, prompt: Any, where: str = "segment()", **options: Any) -> RunConfig:
        """A config from the flat keyword options of the entry points.

        Options: ``sam``, ``clip``, ``device``, ``precision``, ``decoder``; ``proposals``;
        the fields of :class:`~.params.SelectionParams` and of
        :class:`~.params.NormalisationParams`; ``templates``; ``sam_params``,
        ``tile_params`` (or ``tiles``), ``guided_params``, ``crop_params``;
        ``relevance``; ``stack_params`` or ``link`` (False: a stack's objects per
        plane); ``concept_class`` (with a :class:`~.concepts.Concept` as the prompt).
        An unknown option is refused with one line naming it and the known ones
        (``where`` names the entry point in that line).
        """
        check_options(options, OPTIONS, where)
        models = Models(**{k: options.pop(k) for k in list(options) if k in _MODEL_FIELDS})
        selection = SelectionParams(**SelectionParams.pick(options))
        normalisation = NormalisationParams(
            **{k: v for k, v in NormalisationParams.pick(options).items() if v is not None}
        )
        tile_params = TileParams.choose(
            options.pop("tile_params", None), options.pop("tiles", None)
        )
        templates = options.pop("templates", None)
        proposals = options.pop("proposals", None)
        target = Target(
            prompt,
            selection.distractors,
            selection.background,
            tuple(templates) if templates is not None else None,
            concept_class=options.pop("concept_class", None),
        )
        return cls(
            target=target,
            models=models,
            proposals="sam" if proposals is None else proposals,
            selection=selection,
            sam_params=options.pop("sam_params", None) or SamProposalParams(),
            tile_params=tile_params,
            guided_params=options.pop("guided_params", None) or GuidedParams(),
            crop_params=options.pop("crop_params", None) or CropParams(),
            normalisation=normalisation,
            relevance=bool(options.pop("relevance", False)),
            stack_params=_stack_params(
                options.pop("stack_params", None), options.pop("link", None)
            ),
        )

    def describe(self) -> dict:
        """The settings as plain data (for provenance and logs)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.as_dict() if hasattr(value, "as_dict") else value
        out["models"] = {f.name: getattr(self.models, f.name) for f in fields(Models)}
        out["target"] = {f.name: getattr(self.target, f.name) for f in fields(Target)}
        concept = self.target.concept
        if concept is not None:
            from .concepts.files import describe

            out["target"]["concept"] = describe(concept)
        return out


def _stack_params(params: StackParams | None, link: bool | None) -> StackParams:
    if params is not None and link is not None and params.link != link:
        raise InputError("Give link either as link=... or in stack_params, not both.")
    params = params or StackParams()
    return params if link is None else replace(params, link=link)


_MODEL_FIELDS = tuple(f.name for f in fields(Models))

#: Every keyword option :meth:`RunConfig.build` takes besides the prompt: the one list
#: of a run's options, derived from the dataclasses, that :func:`napari_slip.segment`,
#: :meth:`Segmenter.segment`, :func:`napari_slip.batch` and ``segment_in_viewer`` take
#: (the command line's flags are made from the same dataclasses).
OPTIONS = (
    *_MODEL_FIELDS,
    "proposals",
    *SelectionParams.names(),
    *NormalisationParams.names(),
    "templates",
    "sam_params",
    "tile_params",
    "tiles",
    "guided_params",
    "crop_params",
    "relevance",
    "stack_params",
    "link",
    "concept_class",
)


#: What an image brings beside the run's options (given to a call with the image, not
#: part of the run): its axes and pixel sizes (where its file does not record them),
#: label proposals, a proposal source of the caller's own.
IMAGE_OPTIONS = ("axes", "pixel_size", "labels", "source")


__all__ = ["IMAGE_OPTIONS", "OPTIONS", "SAM_INPUT_SIZE", "Models", "RunConfig", "Target"]
