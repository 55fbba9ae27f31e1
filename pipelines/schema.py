"""The schema of the run configs of both pipelines (pydantic): one model per section, one per audit kind, and the
one-line message of a validation error. Choice lists come from the registries they configure (SSL methods,
digits-captions parts); scorer, findings and ecif sections are checked by their own config classes."""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from influencegate import InfluenceConfig, resources
from influencegate.data import DIGITS_CAPTIONS
from influencegate.data.captions import PARTS
from influencegate.data.constants import CHANNELS
from influencegate.ecif import EcifConfig
from influencegate.ecif.effects import EffectsConfig
from influencegate.findings.registry import FindingsConfig
from influencegate.models.heads import METHODS

#: The two audits: images (dataset_audit_pipeline) and image-text pairs (pair_audit_pipeline).
Kind = Literal["images", "pairs"]
#: The ZenML run options a config may set beside `parameters`.
RUN_OPTIONS = ("run_name", "enable_cache", "settings", "tags")


class Section(BaseModel):
    """A config section: unknown keys are errors; a bare string stands for {"source": string}."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _bare_source(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) and "source" in cls.model_fields else value


class DataSection(Section):
    """A dataset version to load (`influencegate.data.load_images`): source, resize, channels, name, workers."""

    source: str = "digits"
    image_size: Optional[int] = Field(None, gt=0)
    channels: Optional[Literal[CHANNELS]] = None  # type: ignore[valid-type]
    name: Optional[str] = None
    workers: int = Field(0, ge=0)


class PairsSection(DataSection):
    """Image-text pairs to load (`influencegate.data.load_pairs`); the last three apply to digits-captions."""

    source: str = DIGITS_CAPTIONS
    shuffled_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    part: Literal[PARTS] = "all"  # type: ignore[valid-type]


class EncoderSection(Section):
    """The encoder: a checkpoint spec to load, else `architecture` pretrained with `method` for `epochs`."""

    checkpoint: Optional[str] = None
    method: Optional[Literal[METHODS]] = "simclr"  # type: ignore[valid-type]
    epochs: int = Field(10, gt=0)
    seed: int = 0
    architecture: str = "small_cnn"
    save_to: Optional[str] = None


class InfluenceSection(Section):
    """Where the scoring run is kept and which earlier version it extends (`workflows.image_audit.score_dataset`).

    resume_dir: keep the fit and the scores there (a local directory or a URL); an interrupted audit resumes
    there, and the next version's audit can name it as `since`. since: the resume_dir of an earlier audit of
    this dataset with the same encoder checkpoint and scorer settings, which this version extends by appending:
    only the new samples are scored (`influence.incremental`). Both unset: a full audit, nothing kept."""

    resume_dir: Optional[str] = None
    since: Optional[str] = None

    @model_validator(mode="after")
    def _keep_the_base(self) -> "InfluenceSection":
        if self.since and self.resume_dir and self.since.rstrip("/") == self.resume_dir.rstrip("/"):
            raise ValueError("resume_dir must differ from since: the previous version's run is the base of this "
                             "one and is not overwritten")
        return self


class GateSection(Section):
    """drift_blocks: failing Evidently drift tests reject too; drift_threshold: None for each method's own."""

    drift_blocks: bool = False
    drift_threshold: Optional[float] = None


class TrackingSection(Section):
    """Where the run is logged: tracking URI, experiment, run directory, upload retry budget (seconds > 0)."""

    uri: Optional[str] = None
    experiment: str = "influencegate"
    run_dir: Optional[str] = None
    retry_seconds: Optional[float] = None

    @field_validator("retry_seconds")
    @classmethod
    def _finite_seconds(cls, value: Optional[float]) -> Optional[float]:
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ValueError(f"must be a finite number of seconds > 0, got {value!r}")
        return value


def _checked(build: Any, what: str, optional: bool = False) -> Any:
    """A field validator: the section (a mapping of `build`'s fields) when `build` accepts it; with
    `optional`, None stays None (the section is switched off)."""

    def check(cls: type, value: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if optional and value is None:
            return None
        value = dict(value or {})
        try:
            build(dict(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return value

    return field_validator(what)(classmethod(check))


class PairTrackingSection(TrackingSection):
    """The pair audit's tracking: its runs go to their own experiment by default."""

    experiment: str = "influencegate-pairs"


class ImageAuditParameters(Section):
    """The image audit's parameters (`dataset_audit_pipeline`'s arguments). scorer and findings replace the
    demo's settings whole (omitted keys: InfluenceConfig's and FindingsConfig's defaults)."""

    dataset: DataSection = DataSection()
    encoder: EncoderSection = EncoderSection()
    scorer: dict[str, Any] = Field(default_factory=dict)
    influence: InfluenceSection = InfluenceSection()
    findings: dict[str, Any] = Field(default_factory=dict)
    suite: Optional[str] = resources.DEFAULT_SUITE
    gate: GateSection = GateSection()
    tracking: TrackingSection = TrackingSection()

    check_scorer = _checked(InfluenceConfig.from_dict, "scorer")
    check_findings = _checked(FindingsConfig.from_dict, "findings")


class PairAuditParameters(Section):
    """The pair audit's parameters (`pair_audit_pipeline`'s arguments): the pairs, the clean reference pairs
    (None: self-influence), EcifConfig fields, EffectsConfig fields (None: no removal effects or trace-back),
    the suite and the tracking."""

    pairs: PairsSection = PairsSection(part="audit")
    reference: Optional[PairsSection] = PairsSection(part="reference", shuffled_fraction=0.0)
    ecif: dict[str, Any] = Field(default_factory=dict)
    effects: Optional[dict[str, Any]] = Field(default_factory=dict)
    suite: Optional[str] = resources.PAIRS_SUITE
    tracking: PairTrackingSection = PairTrackingSection()

    check_ecif = _checked(EcifConfig.from_dict, "ecif")

    check_effects = _checked(EffectsConfig.from_dict, "effects", optional=True)


class RunConfig(Section):
    """A run config: the pipeline's parameters and ZenML run options."""

    run_name: Optional[str] = None
    enable_cache: Optional[bool] = None
    settings: Optional[dict[str, Any]] = None
    tags: Optional[list[Any]] = None


class ImageAuditConfig(RunConfig):
    """The image audit's run config."""

    parameters: ImageAuditParameters = ImageAuditParameters()


class PairAuditConfig(RunConfig):
    """The pair audit's run config."""

    parameters: PairAuditParameters = PairAuditParameters()


SCHEMAS: dict[str, type[RunConfig]] = {"images": ImageAuditConfig, "pairs": PairAuditConfig}


def _allowed(schema: type[BaseModel], loc: Sequence[Union[str, int]]) -> list[str]:
    """The keys the section at `loc` (a path of field names from `schema`) allows."""
    model: Any = schema
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = next((a for a in (getattr(field.annotation, "__args__", None) or (field.annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(model.model_fields) if model is not None else []


def one_line(error: ValidationError, schema: type[BaseModel]) -> str:
    """The first problem of a validation error as one line that names the key (`parameters.scorer.rank: ...`)."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"] if not str(p).startswith(("function-", "literal["))]
    key = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        what = "parameter" if len(loc) == 2 and loc[0] == "parameters" else "key"
        return f"unknown {what} {key!r}; allowed: {', '.join(_allowed(schema, loc[:-1]))}"
    message = str(first["msg"]).removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict) or first["type"] == "value_error" else f", got {given!r}"
    return f"{key}: {message}{shown}"
