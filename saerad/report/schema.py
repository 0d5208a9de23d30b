"""The grounded report: the one output type of report generation (docs/method.md#report-composition).

Its ``findings`` items are a superset of the MAIRA-2 / RadFact grounded-report item
``{"text": str, "boxes": [{"x_min", "y_min", "x_max", "y_max"}] | null}`` (coordinates 0..1 of the
original image), so tools written for those formats read ``to_radfact()`` or even the raw JSON;
our own keys (``features``, ``heatmap``) keep every sentence traceable to the SAE features behind it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = "1"


class Box(BaseModel):
    """An axis-aligned box, normalised to 0..1 of the original image (x = column, y = row)."""

    model_config = ConfigDict(extra="forbid")

    x_min: float = Field(ge=0.0, le=1.0)
    y_min: float = Field(ge=0.0, le=1.0)
    x_max: float = Field(ge=0.0, le=1.0)
    y_max: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x_min > self.x_max or self.y_min > self.y_max:
            raise ValueError("box needs x_min <= x_max and y_min <= y_max")
        return self


class FeatureRef(BaseModel):
    """One SAE feature as used by a report: its id, its activation on this image, its description.

    ``score`` (held-out AUROC of the description) and ``usable`` come from the feature dictionary so
    a reader can see why a feature did or did not make it into the findings. ``strength`` is the
    activation times the norm of the feature's decoder row, i.e. how much of the class token the
    feature writes: a report's ``features`` are listed by it, strongest first.
    """

    id: int = Field(ge=0)
    activation: float
    strength: float | None = None
    description: str = ""
    score: float | None = None
    usable: bool = True
    contribution: float | None = None  # weight x activation, when the feature votes in a finding rule


class RuleEvidence(BaseModel):
    """Why a finding rule wrote its sentence: the voters' summed contributions reached its threshold."""

    condition: str
    evidence: float
    threshold: float
    held_out_auroc: float | None = None


class Sentence(BaseModel):
    """One findings sentence; ``boxes`` and ``heatmap`` stay null until localisation fills them.

    ``rule`` is set when a finding rule wrote the sentence (its ``features`` are then the active
    voters, each with its ``contribution``); otherwise one or more features' own descriptions did.
    """

    text: str
    boxes: list[Box] | None = None
    features: list[FeatureRef]
    # The sentence's map: a single-channel PNG over the whole image, brighter = stronger (a data URI,
    # a path, or the service's link to it). Overlays on the X-ray are separate, optional pictures.
    heatmap: str | None = None
    rule: RuleEvidence | None = None


Status = Literal["findings", "normal", "nothing_validated"]
NOTHING_VALIDATED = (
    "No finding could be validated for this image: none of its active features has a description "
    "or finding rule that held up on held-out patients."
)


OUT_OF_DISTRIBUTION_WARNING = (
    "Warning: this image does not look like the chest X-rays this model was trained on, so the "
    "findings below say nothing reliable about it."
)


class OutOfDistribution(BaseModel):
    """How the image's class token compares with the bundle's training images (:mod:`saerad.ood`).

    ``flagged`` when ``distance`` exceeds ``threshold``; ``training_share_farther`` is the share of
    unseen training images (out of fold) at least as far, a p-value-like reading of the distance.
    """

    flagged: bool
    distance: float
    threshold: float
    training_share_farther: float
    method: str


class ImageInfo(BaseModel):
    """What the decoder saw: boxes are relative to this size."""

    height: int
    width: int
    source_format: str | None = None


class Localization(BaseModel):
    """How the sentences' ``boxes`` and ``heatmap`` were made: ``attribution`` (the encoder's own
    sensitivity to each region) or ``counterfactual`` (what a diffusion model changes when the
    sentence's features are removed), and the method's parameters."""

    method: Literal["attribution", "counterfactual"]
    sentences: int = Field(ge=0, description="sentences that got a map")
    detail: dict[str, Any] = Field(default_factory=dict)


class GroundedReport(BaseModel):
    """Findings sentences with their features, all active features, and provenance.

    ``status``: ``findings`` (at least one finding sentence), ``normal`` (the normal statement and
    nothing else) or ``nothing_validated`` (no sentence: the image's active features carry nothing
    that held up on held-out patients; :meth:`text` then says so).
    ``research_use_only`` is always true: no model here is a medical device. ``notes`` says what the
    composer did that a reader should know (e.g. an LLM rewrite rejected and replaced by the
    deterministic text); it never repeats report text. ``out_of_distribution`` is the bundle's
    check of the image (None when the bundle has none); ``warnings`` are what a reader must see
    before the findings (:meth:`text` starts with them).
    """

    schema_version: str = SCHEMA_VERSION
    status: Status = "findings"
    findings: list[Sentence]
    features: list[FeatureRef]
    bundle: dict[str, Any] = Field(default_factory=dict)
    research_use_only: bool = True
    timings_ms: dict[str, float] = Field(default_factory=dict)
    composer: str = "deterministic"
    notes: list[str] = Field(default_factory=list)
    image: ImageInfo | None = None
    localization: Localization | None = None  # None: not localised (boxes and heatmaps stay null)
    out_of_distribution: OutOfDistribution | None = None
    warnings: list[str] = Field(default_factory=list)

    def findings_text(self) -> str:
        """The findings section as written, one paragraph (empty when nothing was validated): what
        evaluation scores."""
        return " ".join(s.text.strip() for s in self.findings if s.text.strip())

    def text(self) -> str:
        """What a reader sees: the warnings, then the findings section or the plain statement that
        nothing was validated."""
        return " ".join([*self.warnings, self.findings_text() or NOTHING_VALIDATED])

    def to_radfact(self) -> list[dict[str, Any]]:
        """The MAIRA-2 / RadFact grounded form: ``[{"text", "boxes"}]`` and nothing else."""
        return [
            {"text": s.text, "boxes": None if s.boxes is None else [b.model_dump() for b in s.boxes]}
            for s in self.findings
        ]

    @property
    def feature_ids(self) -> list[int]:
        return [f.id for f in self.features]
