"""The paper's ablations as data: each is a set of variants of AnomalyCLIP's configuration, trained on one auxiliary
dataset and tested on the other (MVTec AD <-> VisA), as the paper reports them (FACTS §2.3).

A variant names the settings it changes (dotted paths of `AnomalyCLIPConfig`, or another method); its job is the
setup's AnomalyCLIP job with exactly those changes, so two ablations that need the same variant share one job and a
test can check that nothing else changed. Sweep grids depend on the protocol: the paper's range and beyond it on
`paper`, three points on `smoke` to keep the main job short.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from anomalyclip.experiments.jobs import DataSource, Job
from anomalyclip.methods.catalog import METHODS

if TYPE_CHECKING:
    from anomalyclip.experiments.plans import Setup
    from anomalyclip.experiments.store import JobResult

METHOD = "method"
"""The pseudo-setting of a variant that runs another method (CoOp, CLIP) instead of AnomalyCLIP."""
MULTI_LAYER = (6, 12, 18, 24)
"""T4: the local features of blocks 6, 12, 18 and 24, as the paper describes (FACTS §1.2)."""
LAST_LAYER = (24,)
"""Without T4: block 24 only, what the official code runs (FACTS §1.2; the default here)."""


@dataclass(frozen=True)
class Variant:
    """One configuration of an ablation: `changes` to the ablation's base configuration (dotted paths)."""

    label: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    method: str = "anomalyclip"
    paper: str | None = None
    """The setting's name in `anomalyclip.paper.ABLATIONS`, where the paper reports this variant."""
    value: Any = None
    """A sweep's value of its setting at this variant."""

    @property
    def named(self) -> frozenset[str]:
        """The settings this variant changes against the ablation's base (with `method` for another method)."""
        return frozenset(self.changes) | ({METHOD} if self.method != "anomalyclip" else frozenset())


@dataclass(frozen=True)
class Ablation:
    """Variants compared under the protocol's ablation transfers; `reference` is the paper's default among them."""

    key: str
    title: str
    artefact: str
    """The key of `anomalyclip.paper.ARTEFACTS` it regenerates."""
    variants: tuple[Variant, ...]
    reference: str
    base: Mapping[str, Any] = field(default_factory=dict)
    """Changes every variant starts from (the leave-one-out table starts from all four modules on)."""
    numbers: str | None = None
    """The key of `anomalyclip.paper.ABLATIONS` with the paper's values, if any."""
    chain: bool = False
    """Incremental (Table 4): each variant adds one setting to the one before it, instead of changing the reference."""
    extra_targets: tuple[str, ...] = ()
    """Datasets also tested with the prompts learned on the primary dataset, when present (state word: BTAD, SDD)."""
    swept: str | None = None
    """A sweep's setting (dotted path); each variant holds its `value`."""

    def variant(self, label: str) -> Variant:
        return next(v for v in self.variants if v.label == label)

    def values(self) -> dict[str, Any]:
        """A sweep's variant labels -> their values of the swept setting, in order."""
        return {v.label: v.value for v in self.variants}


def sweep(key: str, title: str, setting: str, values: Iterable[Any], default: Any, name: str) -> Ablation:
    """One setting over `values` (the default among them is the reference)."""
    values = sorted(set(values) | {default})
    variants = tuple(Variant(f"{name}={v}", {} if v == default else {setting: v}, value=v) for v in values)
    return Ablation(key, title, "fig7", variants, f"{name}={default}", swept=setting)


SWEEPS = {
    "paper": {"n_ctx": (4, 8, 12, 16, 20, 24), "depth": (1, 3, 5, 7, 9, 11), "t_n_ctx": (1, 2, 4, 6, 8),
              "lambda_local": (0.5, 1.0, 2.0, 4.0, 8.0)},
    "smoke": {"n_ctx": (4, 12, 24), "depth": (3, 9, 12), "t_n_ctx": (2, 4, 8), "lambda_local": (1.0, 4.0, 8.0)},
}  # fmt: skip
"""Fig. 7's grids: the paper's range and beyond it (E up to 24, where the paper reports a decline); on smoke one value
below and one above each default."""
STATE_WORDS = ("damaged", "anomalous", "flawed", "defective", "blemished")


def ablations(protocol: str) -> dict[str, Ablation]:
    """Every ablation of the paper, by key, with the sweep grids of `protocol`."""
    full = {"vision.features_list": MULTI_LAYER}
    grids = SWEEPS[protocol]
    table = [
        Ablation("modules", "Module ablation, incremental (Table 4)", "table4", (
            Variant("Base", {"vision.dpam_blocks": 0, "prompt.object_aware": True, "prompt.deep_tokens": False}),
            Variant("+T1 DPAM", {"prompt.object_aware": True, "prompt.deep_tokens": False}),
            Variant("+T2 object-agnostic prompts", {"prompt.deep_tokens": False}),
            Variant("+T3 text-encoder tokens", {}),
            Variant("+T4 multi-layer local features", full, paper="full"),
        ), "+T4 multi-layer local features", chain=True),
        Ablation("leave_one_out", "Module ablation, leave one out (revised Table 7)", "table4", (
            Variant("full (T1-T4)", paper="full"),
            Variant("- T1 DPAM", {"vision.dpam_blocks": 0}, paper="- T1 DPAM"),
            Variant("- T2 object-agnostic prompts", {"prompt.object_aware": True}, paper="- T2 object-agnostic prompt"),
            Variant("- T3 text-encoder tokens", {"prompt.deep_tokens": False},
                    paper="- T3 learnable text-encoder tokens"),
            Variant("- T4 multi-layer local features", {"vision.features_list": LAST_LAYER},
                    paper="- T4 multi-layer local features"),
        ), "full (T1-T4)", base=full, numbers="leave_one_out"),
        Ablation("losses", "Global and local losses (Table 5), Focal and Dice (revised Table 14)", "table5", (
            Variant("global + local (Focal + Dice)", {}, paper="Focal + Dice"),
            Variant("global only (no local loss)", {"loss.use_focal": False, "loss.use_dice": False},
                    paper="no local loss"),
            Variant("local only", {"loss.use_global": False}),
            Variant("global + Dice only", {"loss.use_focal": False}, paper="Dice only"),
            Variant("global + Focal only", {"loss.use_dice": False}, paper="Focal only"),
        ), "global + local (Focal + Dice)", numbers="local_loss"),
        Ablation("dpam", "DPAM attention (Fig. 6) and ensembles (revised Table 12)", "fig6", (
            Variant("V-V (AnomalyCLIP)", {}),
            Variant("off (plain CLIP path)", {"vision.dpam_blocks": 0}),
            Variant("Q-Q", {"vision.dpam_mode": "qq"}),
            Variant("K-K", {"vision.dpam_mode": "kk"}),
            Variant("ensemble QQ+KK+VV", {"vision.dpam_mode": "qq+kk+vv"}),
            Variant("ensemble QK+QQ+KK+VV", {"vision.dpam_mode": "qk+qq+kk+vv"}, paper="ensemble QK+QQ+KK+VV"),
        ), "V-V (AnomalyCLIP)", numbers="attention"),
        Ablation("dpam_blocks", "Which blocks carry the DPAM path", "fig6", (
            Variant("blocks 6-24 (AnomalyCLIP)", {}),
            Variant("blocks 19-24", {"vision.dpam_blocks": 6}),
            Variant("blocks 13-24", {"vision.dpam_blocks": 12}),
            Variant("blocks 1-24", {"vision.dpam_blocks": 24}),
        ), "blocks 6-24 (AnomalyCLIP)"),
        Ablation("prompts", "Prompt design: object-agnostic vs object-aware, CoOp, shared contexts (Tables 9-11)",
                 "prompt_design", (
            Variant("object-agnostic (AnomalyCLIP)", {}),
            Variant("object-aware learned prompts", {"prompt.object_aware": True}),
            Variant("shared normal/abnormal context", {"prompt.shared_context": True}, paper="shared"),
            Variant("CoOp ([V][normal|anomalous][cls], plain CLIP)", method="coop"),
            Variant("CLIP (hand-made, object-aware)", method="clip"),
            Variant("CLIP-AC (hand-made ensemble)", method="clip_ac"),
        ), "object-agnostic (AnomalyCLIP)", numbers="shared_prompts"),  # fmt: skip
        Ablation("state_word", "The state word of the abnormal prompt (revised Tables 16/17)", "state_word",
                 tuple(Variant(w, {} if w == "damaged" else {"prompt.state_word": w}, paper=_word_label(w))
                       for w in STATE_WORDS),
                 "damaged", numbers="prompt_word", extra_targets=("btad", "sdd")),  # fmt: skip
        sweep("prompt_length", "Prompt length E (Fig. 7)", "prompt.n_ctx", grids["n_ctx"], 12, "E"),
        sweep("token_depth", "Depth of the text-encoder tokens (Fig. 7)", "prompt.depth", grids["depth"], 9, "depth"),
        sweep("token_length", "Length of the text-encoder tokens (Fig. 7)", "prompt.t_n_ctx", grids["t_n_ctx"], 4,
              "length"),
        sweep("lambda", "Weight λ of the local loss (Fig. 7)", "loss.lambda_local", grids["lambda_local"], 4.0, "λ"),
    ]  # fmt: skip
    return {a.key: a for a in table}


def _word_label(word: str) -> str | None:
    return {"damaged": "damaged", "anomalous": "anomalous/defective", "defective": "anomalous/defective"}.get(word)


def with_changes(config: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a configuration dict with dotted-path `changes` set (every path must exist)."""
    from anomalyclip.errors import ConfigError

    out = copy.deepcopy(dict(config))
    for path, value in changes.items():
        *sections, name = path.split(".")
        node = out
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict) or name not in node:
            raise ConfigError(f"ablation setting {path!r} is not a setting of the configuration")
        node[name] = list(value) if isinstance(value, tuple) else value
    return out


def changed_settings(job: Job, other: Job) -> set[str]:
    """The settings in which two jobs differ: dotted configuration paths, and `method`, `train`, `targets`,
    `precision` or `shots` where those differ (what the ablation test holds to the variant's named settings)."""
    mine, theirs = _flat(job.config), _flat(other.config)
    changed = {path for path in mine.keys() | theirs.keys() if mine.get(path) != theirs.get(path)}
    for name in ("method", "train", "targets", "precision", "shots"):
        if getattr(job, name) != getattr(other, name):
            changed.add(name)
    return changed


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{name}.")
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def transfers(setup: Setup, ablation: Ablation, sources: Mapping[str, DataSource]) -> list[tuple[str, tuple[str, ...]]]:
    """(training dataset, tested datasets) of an ablation among `sources`: the protocol's ablation transfers plus the
    ablation's extra targets from the primary dataset."""
    pairs = []
    for train, targets in setup.rules.ablation_transfers():
        if train not in sources:
            continue
        extra = ablation.extra_targets if train == setup.rules.primary else ()
        present = tuple(t for t in (*targets, *extra) if t in sources)
        if present:
            pairs.append((train, present))
    return pairs


def variant_job(setup: Setup, variant: Variant, train: str, targets: tuple[DataSource, ...],
                sources: Mapping[str, DataSource], ablation: str, base: Mapping[str, Any]) -> Job:  # fmt: skip
    """The job of one variant trained on `train`: the setup's configuration of its method, the ablation's `base`
    changes, then the variant's."""
    from anomalyclip.methods.registry import method_config_from_dict

    learns = METHODS[variant.method].learns
    config = setup.config(variant.method, train if learns else None)
    config = with_changes(with_changes(config, base), variant.changes)
    method_config_from_dict(variant.method, config)  # validated where it is defined
    tags = {"ablation": ablation, "variant": variant.label, "trained on": train}
    return Job(variant.method, config, targets, sources[train] if learns else None, setup.precision, tags=tags)


def ablation_jobs(setup: Setup, ablation: Ablation, sources: Mapping[str, DataSource]) -> list[Job]:
    """One job per variant and transfer of `ablation`."""
    return [
        variant_job(setup, variant, train, tuple(sources[t] for t in targets), sources, ablation.key, ablation.base)
        for train, targets in transfers(setup, ablation, sources)
        for variant in ablation.variants
    ]


def ablation_results(ablation: Ablation, jobs: Iterable[Job], results: Mapping[str, JobResult]) -> pd.DataFrame:
    """Long form (variant, trained on, dataset, metric, value in percent) of the finished jobs of `ablation`."""
    from anomalyclip.experiments.results import long_results

    frames = []
    for job in jobs:
        if job.tags.get("ablation") != ablation.key or job.id not in results:
            continue
        long = long_results([results[job.id]])
        frames.append(long.assign(variant=job.tags["variant"], trained_on=job.tags["trained on"]))
    if not frames:
        return pd.DataFrame(columns=["variant", "trained_on", "dataset", "metric", "value"])
    order = {v.label: i for i, v in enumerate(ablation.variants)}
    table = pd.concat(frames, ignore_index=True)[["variant", "trained_on", "dataset", "metric", "value"]]
    return table.sort_values("variant", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def ablation_table(long: pd.DataFrame, metrics: Iterable[str] = ("pixel_auroc", "image_auroc")) -> pd.DataFrame:
    """Variants as rows, (dataset, metric) as columns, in percent with one decimal: the paper's layout."""
    part = long[long.metric.isin(list(metrics))]
    order = list(dict.fromkeys(part.variant))
    table = part.pivot_table(index="variant", columns=["dataset", "metric"], values="value", sort=False)
    return table.reindex(order).round(1) + 0.0


def beside_paper(ablation: Ablation, long: pd.DataFrame) -> pd.DataFrame:
    """The paper's cells of `ablation` with this run's value of the same variant, dataset and metric, and the
    difference (this run minus paper); only meaningful when the run follows the paper's protocol."""
    from anomalyclip.paper import paper_ablations

    columns = ["variant", "dataset", "metric", "paper", "this run", "difference"]
    if ablation.numbers is None:
        return pd.DataFrame(columns=columns)
    paper = paper_ablations(ablation.numbers)
    rows = []
    for variant in ablation.variants:
        for cell in paper[paper.setting == variant.paper].itertuples():
            ours = long[(long.variant == variant.label) & (long.dataset == cell.dataset) & (long.metric == cell.metric)]
            value = float(ours.value.iloc[0]) if len(ours) else float("nan")
            rows.append((variant.label, cell.dataset, cell.metric, cell.value, value, value - cell.value))
    return pd.DataFrame(rows, columns=columns)


def write_ablation(
    ablation: Ablation,
    long: pd.DataFrame,
    folder: str | Path,
    name: str,
    *,
    banner: str | None,
    comparable: bool,
    metrics: Iterable[str] = ("pixel_auroc", "image_auroc"),
) -> pd.DataFrame:
    """Write an ablation's table (`name`) and, when the run is comparable with the paper and the paper reports the
    ablation, its cells beside the paper's (`name_paper_vs_run`, read by the scorecard); returns the table."""
    from anomalyclip.reports import write_table
    from anomalyclip.scorecard import COMPARISON_SUFFIX

    table = ablation_table(long, metrics)
    write_table(table.reset_index(), folder, name, banner=banner)
    if comparable and ablation.numbers is not None:
        write_table(beside_paper(ablation, long), folder, f"{name}{COMPARISON_SUFFIX}", banner=banner)
    return table
