"""The paper's protocol as data: which dataset trains the learned methods and which datasets each training is tested
on (FACTS §1.7). Prompts learned on the test split of a primary auxiliary dataset (MVTec AD) are evaluated on every
other dataset; prompts learned on a secondary one (VisA) are evaluated on the primary. Methods that learn nothing are
evaluated on every dataset. The smoke protocol has the same shape on two synthetic domains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyclip.data.synth import (
    OBJECT_CATEGORIES,
    TEXTURE_CATEGORIES,
    default_synthetic_root,
    ensure_synthetic_dataset,
)
from anomalyclip.experiments.jobs import DataSource, Job
from anomalyclip.methods.registry import METHODS

SMOKE_SOURCE = "synthetic source"
SMOKE_TARGET = "synthetic target"


@dataclass(frozen=True)
class Protocol:
    """Train on `primary` -> test everything else; train on `secondary` -> test `primary`."""

    name: str
    primary: str
    secondary: str
    ablations_both_ways: bool = True
    """Ablations also train on the secondary and test the primary (the paper); smoke trains one way only, to keep
    the main job short."""

    def transfers(self, available: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
        """(training dataset, evaluated datasets) pairs among the `available` dataset names: none without the
        primary, no second one without the secondary (whether a missing dataset may be skipped is decided when the
        datasets are found: `experiments.plans.datasets`)."""
        if self.primary not in available:
            return []
        pairs = [(self.primary, tuple(d for d in available if d != self.primary))]
        if self.secondary in available:
            pairs.append((self.secondary, (self.primary,)))
        return pairs

    def ablation_transfers(self) -> list[tuple[str, tuple[str, ...]]]:
        """The paper's ablations: each way between the two auxiliary datasets (MVTec AD -> VisA, VisA -> MVTec AD)."""
        pairs = [(self.primary, (self.secondary,))]
        return pairs + [(self.secondary, (self.primary,))] if self.ablations_both_ways else pairs


PAPER = Protocol("paper", "mvtec", "visa")
"""Dataset keys as in `anomalyclip.paper` (MVTec AD, VisA)."""
SMOKE = Protocol("smoke", SMOKE_SOURCE, SMOKE_TARGET, ablations_both_ways=False)
PROTOCOLS = {p.name: p for p in (PAPER, SMOKE)}


def smoke_sources(root: str | Path | None = None) -> dict[str, DataSource]:
    """The two synthetic domains (textures as source, objects as target), generated once under `root`."""
    base = Path(root) if root is not None else default_synthetic_root().parent / "smoke"
    folders = {
        SMOKE_SOURCE: ensure_synthetic_dataset(base / "synthetic_source", categories=TEXTURE_CATEGORIES),
        SMOKE_TARGET: ensure_synthetic_dataset(base / "synthetic_target", categories=OBJECT_CATEGORIES, seed=1),
    }
    return {name: DataSource(name, "generic", str(folder)) for name, folder in folders.items()}


ConfigFor = Callable[[str, str | None], Mapping[str, Any]]
"""(method, training dataset or None) -> the method's configuration dict (a recipe can depend on the training set)."""


def table_jobs(
    protocol: Protocol,
    sources: Mapping[str, DataSource],
    methods: Sequence[str],
    config_for: ConfigFor,
    *,
    precision: str = "fp32",
) -> list[Job]:
    """The jobs of Tables 1-2: every method on every source, the learned ones under the protocol's transfers."""
    jobs = []
    for method in methods:
        if METHODS[method].learns:
            for train, targets in protocol.transfers(list(sources)):
                jobs.append(Job(method, config_for(method, train), tuple(sources[t] for t in targets),
                                sources[train], precision, tags={"table": "main", "trained on": train}))  # fmt: skip
        else:
            jobs.append(Job(method, config_for(method, None), tuple(sources.values()), None, precision,
                            tags={"table": "main"}))  # fmt: skip
    return jobs
