"""The registry of findings, in the manner of cleanlab Datalab's issue managers: one base class, `REGISTRY`
filled by the `register` decorator, one module per finding (docs/design.md section 5).

A finding module declares, on one `FindingPlugin` subclass:
  name            the finding's key: its option in `FindingsConfig`, its text's heading;
  Config          what validates its options: a dataclass (or a class) taking them as keyword arguments;
  columns         the per-sample columns it adds to the scores table;
  metrics         `Metric`s (name, unit, one-line meaning) it adds to the summary the gate checks;
  figures/tables  `Artifact`s (short name, artifact path) it draws (`draw`) or derives (`derive`);
  expectations    its gate expectations per table ({"summary": [...], "scores": [...]}), in the format of
                  influencegate/resources/expectations/default.json;
  default         whether it runs when the config does not name it;
and implements `run` (columns, metric values and a plain-language text naming the samples it flags).
`findings.run.find_all`, `findings.run.artifacts`, report.findings_figures, the ZenML steps, MLflow and the gate
assemble everything from here: a new finding is its module, imported by influencegate.findings, and its tests.

Pure core: numpy, pandas, torch, PIL only (figures import the report's drawing helpers when drawn).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

#: Artifact path of the findings' plain-language texts ({finding name: text}).
TEXTS_PATH = "findings/texts.json"


@dataclass(frozen=True)
class Metric:
    """One summary metric: its name, unit (e.g. "fraction of examined samples", "count") and meaning."""

    name: str
    unit: str
    meaning: str


@dataclass(frozen=True)
class Artifact:
    """A figure or table of a finding: a short name (ZenML, render_all) and its artifact path (MLflow)."""

    name: str
    path: str


@dataclass
class FindingInputs:
    """What a finding may look at. table: the scores table (N rows, with the columns of the findings run
    before it); embeddings: M x D of the readable samples; images: M x C x H x W in the same order, normalised
    as given to the scorer; mean/std: the C per-channel values that normalised them (pixels = x * std + mean,
    in [0, 1]), None when the images are pixels already; sample_ids: the M ids (default: the error-free rows
    in table order, see findings.base.align_embeddings); groups: the group columns to audit; previous: the
    previous version's findings state of an appended version (findings.appended.Previous), None for a
    version audited whole. shared: what one finding's pass over the images computes for a later one, by name
    (find_all: "image_statistics", an image_stats.StatisticsStream the duplicate index's streaming pass fills
    and the outliers finding reads, when a finding `wants` it); the same dict for every finding of one call."""

    table: pd.DataFrame
    embeddings: np.ndarray | None = None
    images: torch.Tensor | np.ndarray | None = None
    sample_ids: Sequence[str] | None = None
    groups: Sequence[str] = ()
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    previous: Any = None
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one finding found: per-sample columns (indexed like the table), metric values, a text, and the
    state it leaves for the next version's appended audit (arrays over the M examined rows; {} without one)."""

    columns: pd.DataFrame
    metrics: dict[str, float]
    text: str | None = None
    state: dict[str, Any] = field(default_factory=dict)


class FindingPlugin(ABC):
    """One registered finding (see the module docstring for what a subclass declares)."""

    name: ClassVar[str]
    Config: ClassVar[Callable[..., Any]]
    columns: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[Metric, ...]] = ()
    figures: ClassVar[tuple[Artifact, ...]] = ()
    tables: ClassVar[tuple[Artifact, ...]] = ()
    expectations: ClassVar[Mapping[str, Sequence[Mapping[str, Any]]]] = {}
    default: ClassVar[bool] = True
    #: True for a finding that audits group columns: without any it is not run (its metrics stay NaN and its
    #: expectations are not joined to the gate), so "not audited" never reads as a passing value.
    needs_groups: ClassVar[bool] = False

    def configure(self, options: Mapping[str, Any]) -> Any:
        """The validated options (`Config(**options)`); ValueError naming the finding on bad options."""
        try:
            return self.Config(**dict(options))
        except TypeError as exc:
            raise ValueError(f"findings.{self.name}: {exc}") from exc

    @abstractmethod
    def run(self, inputs: FindingInputs, config: Any) -> Outcome:
        """Columns for every row of inputs.table (same index), the values of `metrics`, and a text."""

    def skipped(self, table: pd.DataFrame) -> Outcome:
        """A finding that does not run: no columns, NaN metrics (a suite that checks them rejects)."""
        return Outcome(pd.DataFrame(index=table.index), {m.name: math.nan for m in self.metrics if "<" not in m.name})

    def draw(self, table: pd.DataFrame, images_by_id: Any, groups: Sequence[str]) -> dict[str, Any]:
        """{figure short name: RGB PIL image} from the scores table with this finding's columns."""
        return {}

    def derive(self, table: pd.DataFrame, config: Any, groups: Sequence[str]) -> dict[str, pd.DataFrame]:
        """{table short name: DataFrame} derived from the scores table with this finding's columns."""
        return {}

    def wants(self, config: Any) -> tuple[str, ...]:
        """Names of FindingInputs.shared values this finding reuses when an earlier one computed them."""
        return ()


#: Registered findings by name, in registration order (the order they run in).
REGISTRY: dict[str, FindingPlugin] = {}


def register(cls: type[FindingPlugin]) -> type[FindingPlugin]:
    """Class decorator: register one instance of a FindingPlugin subclass under its `name`."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__}: a finding needs a name")
    if cls.name in REGISTRY and type(REGISTRY[cls.name]) is not cls:
        raise ValueError(f"a finding named {cls.name!r} is already registered ({type(REGISTRY[cls.name]).__name__})")
    REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a registered finding (e.g. one a test registered)."""
    REGISTRY.pop(name, None)


class FindingsConfig:
    """Which registered findings run and how (YAML-style): FindingsConfig(groups=[...], <finding>=options).

    <finding>: the keyword options of a registered finding (its Config), or None to skip it; a finding not
    named runs with its defaults when it is `default`, else not. groups: group columns of the dataset's
    records to audit (fairness); a string is one column. Unknown names are a ValueError naming them.
    """

    def __init__(self, groups: Sequence[str] | str = (), **options: Mapping[str, Any] | None) -> None:
        unknown = sorted(set(options) - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown findings option(s) {unknown}; known: {sorted(['groups', *REGISTRY])}")
        self.groups = [groups] if isinstance(groups, str) else list(groups)
        self.options: dict[str, dict[str, Any] | None] = {}
        for name, plugin in REGISTRY.items():
            given = options[name] if name in options else ({} if plugin.default else None)
            self.options[name] = None if given is None else dict(given)
            if given is not None:
                plugin.configure(given)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "FindingsConfig":
        """Build from a (YAML) mapping; unknown keys are an error naming them."""
        return cls(**dict(values or {}))

    def enabled(self) -> list[FindingPlugin]:
        """The registered findings this config runs, in registry order (one that needs group columns only
        when some are given)."""
        return [p for name, p in REGISTRY.items()
                if self.options.get(name) is not None and (self.groups or not p.needs_groups)]

    def config(self, plugin: FindingPlugin) -> Any:
        """The validated options of an enabled finding."""
        return plugin.configure(self.options[plugin.name] or {})


def as_config(config: "FindingsConfig | Mapping[str, Any] | None") -> FindingsConfig:
    """A FindingsConfig from itself, a mapping of its fields, or None (the defaults)."""
    return config if isinstance(config, FindingsConfig) else FindingsConfig.from_dict(config)


def metric_catalog() -> dict[str, Metric]:
    """Every registered finding's declared metrics by name (units and meanings for reports)."""
    return {m.name: m for plugin in REGISTRY.values() for m in plugin.metrics}


def suite_with_findings(suite: Mapping[str, Any], config: FindingsConfig | Mapping[str, Any] | None = None
                        ) -> dict[str, Any]:
    """The suite, plus each enabled finding's expectations when it says `"include_findings": true`.

    suite: {"name", "meta", "tables": {"scores": [...], "summary": [...]}} (integrations.great_expectations
    load_suite). An expectation the suite already holds (same type and column) is kept as the suite writes it,
    so a suite overrides a finding's threshold by stating its own."""
    out = {**suite, "tables": {t: list(e) for t, e in (suite.get("tables") or {}).items()}}
    if not suite.get("include_findings"):
        return out
    for plugin in as_config(config).enabled():
        for table, specs in plugin.expectations.items():
            present = {(e.get("type"), (e.get("kwargs") or {}).get("column")) for e in out["tables"].get(table, [])}
            out["tables"].setdefault(table, []).extend(
                dict(e) for e in specs if (e["type"], e.get("kwargs", {}).get("column")) not in present)
    return out


def flagged_ids(table: pd.DataFrame, mask: pd.Series | np.ndarray, limit: int = 10) -> str:
    """The sample ids of the flagged rows, comma-separated, the first `limit` then "and k more"."""
    ids = table.loc[np.asarray(mask, dtype=bool), "sample_id"].astype(str).tolist()
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def between(column: str, why: str, min_value: float | None = 0, max_value: float | None = None) -> dict[str, Any]:
    """A summary expectation `expect_column_values_to_be_between` in the suite format."""
    kwargs = {"column": column, **({} if min_value is None else {"min_value": min_value}),
              **({} if max_value is None else {"max_value": max_value})}
    return {"type": "expect_column_values_to_be_between", "kwargs": kwargs, "meta": {"why": why}}

