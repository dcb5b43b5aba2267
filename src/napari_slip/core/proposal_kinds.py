"""Where candidates come from: every named kind of proposals, in one table.

A named kind of proposals (``Segmenter.segment(proposals=...)``, ``--proposals``, the
widget's Proposals list) is one :class:`ProposalKind` here: its name, what it needs
and uses, its help and its label in the widget. Choices, help texts, checks and
provenance derive from this table; the source each kind makes is in
:data:`napari_slip.core.pipeline.collect.SOURCES` (name -> factory). A new kind is one
row here and one factory there (``tests/core/test_architecture.py`` checks they
match).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProposalKind:
    """One named kind of proposals.

    Attributes
    ----------
    name
        What it is called (``proposals=NAME``).
    help
        One phrase: what its candidates are.
    needs_sam
        Whether it decodes SAM (its model is then loaded and recorded).
    from_prompt
        Whether it makes its own candidates from the prompt (its relevance map): no
        label image or source of the caller's own goes with it.
    label
        Its entry in the widget's Proposals list (None: offered otherwise, as the
        labels layers are).
    per_image
        Whether it needs something of one image (a label image): not for a batch.
    """

    name: str
    help: str
    needs_sam: bool
    from_prompt: bool = False
    label: str | None = None
    per_image: bool = False

    @property
    def uses_map(self) -> bool:
        """Whether its candidates come from the prompt's relevance map."""
        return self.from_prompt


#: Every named kind, the default first.
PROPOSAL_KINDS: dict[str, ProposalKind] = {
    kind.name: kind
    for kind in (
        ProposalKind(
            "sam", "SAM's grid (or its tiles)", needs_sam=True, label="SAM automatic masks"
        ),
        ProposalKind(
            "labels",
            "the objects of a label image (labels=...)",
            needs_sam=False,
            per_image=True,
        ),
        ProposalKind(
            "relevance",
            "the relevance map's regions (no SAM)",
            needs_sam=False,
            from_prompt=True,
            label="Relevance map regions (no SAM)",
        ),
        ProposalKind(
            "guided",
            "SAM at points the relevance map places (fast)",
            needs_sam=True,
            from_prompt=True,
            label="Fast: guided by the prompt",
        ),
    )
}

#: Their names (see ``Segmenter.segment(proposals=...)``).
PROPOSALS = tuple(PROPOSAL_KINDS)


def proposal_kind(name: str) -> ProposalKind | None:
    """The kind called ``name``, if there is one."""
    return PROPOSAL_KINDS.get(name) if isinstance(name, str) else None


def kinds_where(**wanted: bool) -> tuple[str, ...]:
    """The names of the kinds whose attributes are as ``wanted`` (e.g.
    ``from_prompt=True``, ``per_image=False``)."""
    return tuple(
        k.name
        for k in PROPOSAL_KINDS.values()
        if all(getattr(k, a) == v for a, v in wanted.items())
    )


__all__ = ["PROPOSALS", "PROPOSAL_KINDS", "ProposalKind", "kinds_where", "proposal_kind"]
