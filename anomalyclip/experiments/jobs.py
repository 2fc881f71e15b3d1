"""Experiments as data: a job is a method with its full configuration, a training source, evaluation targets,
precision, shots and seed. Its identity is a hash of all of that plus the version of the code that computes it, so
asking for the same job twice reuses the first result and any change of setting or numerics makes a new one.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anomalyclip.data import Record, load_records
from anomalyclip.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parents[1]
_NOT_NUMERICS = (
    "cli.py", "conformance.py", "conformance_cli.py", "conformance_vand.py", "conformance_winclip.py", "reproduce.py",
    "reports.py", "paper.py", "scorecard.py", "studies.py", "locations.py", "experiments/jobs.py",
    "experiments/store.py", "experiments/plans.py", "experiments/ablations.py",
    "experiments/protocol.py", "experiments/results.py", "experiments/executors.py",
)  # fmt: skip
"""Package files that never change a job's numbers (faces, tables, bookkeeping; a job's settings are in its identity
already); every other source file does."""


@functools.cache
def code_version() -> str:
    """A digest of the package sources that compute results: editing any of them makes every job new."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        relative = path.relative_to(_PACKAGE)
        if relative.name in _NOT_NUMERICS or relative.as_posix() in _NOT_NUMERICS:
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class DataSource:
    """Images of one dataset: its loader name, folder, split and categories, under a display name."""

    name: str
    """Display name, e.g. `MVTec AD` or `synthetic target`: the key of the results."""
    dataset: str
    """Adapter name (`mvtec`, `visa`, `generic`, ...)."""
    root: str
    split: str = "test"
    categories: tuple[str, ...] | None = None
    pixel_level: bool = True

    def records(self) -> list[Record]:
        return load_records(self.root, self.dataset, self.split, self.categories)

    def with_split(self, split: str) -> DataSource:
        """The same dataset's other split (e.g. few-shot references from `train`)."""
        return DataSource(self.name, self.dataset, self.root, split, self.categories, self.pixel_level)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSource:
        data = dict(data)
        if data.get("categories") is not None:
            data["categories"] = tuple(data["categories"])
        return cls(**data)


@dataclass(frozen=True)
class Job:
    """One training (or none) and the evaluations of its result: the unit the run store caches and executors run."""

    method: str
    config: Mapping[str, Any]
    """The method's full configuration (`to_dict()` of its config object)."""
    targets: tuple[DataSource, ...]
    train: DataSource | None = None
    precision: str = "fp32"
    shots: int = 0
    tags: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Free labels for reading results (ablation name, varied setting); not part of the identity."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", json.loads(json.dumps(dict(self.config), sort_keys=True)))
        if not self.targets:
            raise ConfigError(f"a {self.method} job needs at least one evaluation target")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"evaluation targets of a {self.method} job have repeated names: {names}")

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result, as plain data."""
        return {
            "method": self.method,
            "config": self.config,
            "train": None if self.train is None else asdict(self.train),
            "targets": [asdict(t) for t in self.targets],
            "precision": self.precision,
            "shots": self.shots,
            "code": code_version(),
        }

    @property
    def id(self) -> str:
        """A stable 16-hex-digit digest of the identity."""
        text = json.dumps(self.identity(), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return self.identity() | {"id": self.id, "tags": dict(self.tags)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        return cls(
            method=data["method"],
            config=data["config"],
            targets=tuple(DataSource.from_dict(t) for t in data["targets"]),
            train=None if data.get("train") is None else DataSource.from_dict(data["train"]),
            precision=data.get("precision", "fp32"),
            shots=data.get("shots", 0),
            tags=data.get("tags", {}),
        )


def unique(jobs: Sequence[Job]) -> list[Job]:
    """`jobs` without repeats (same identity), in first-seen order: two notebooks that need one job share it."""
    seen: dict[str, Job] = {}
    for job in jobs:
        seen.setdefault(job.id, job)
    return list(seen.values())
