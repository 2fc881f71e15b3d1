"""The AnomalyCLIP paper's own numbers as data, so every report can show the paper beside this run.

Tables 1 and 2 with all baselines, the ablations published as text and the per-class logs of the released
checkpoints, transcribed from the paper (ICLR 2024), its OpenReview rebuttal and zqhang/AnomalyCLIP as collected in
ANOMALYCLIP_FACTS.md §2. Values are percent as printed; `None` is a cell printed as '–'. Not published as text, so
absent: the incremental module table (Table 4), the glocal table (Table 5) and the prompt length/depth figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from anomalyclip.data.specs import SPECS
from anomalyclip.errors import AnomalyCLIPError

Pair = tuple[float, float] | None

METHODS = ("CLIP", "CLIP-AC", "WinCLIP", "VAND", "CoOp", "AnomalyCLIP")
"""Columns of Tables 1 and 2; VAND is APRIL-GAN."""
METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro")
LEVEL_METRICS = {"image": ("image_auroc", "image_ap"), "pixel": ("pixel_auroc", "pixel_aupro")}
"""The pair each cell of Tables 1 and 2 holds, by level."""

DATASET_NAMES = {spec.name: spec.paper_name for spec in SPECS if spec.paper_name}
"""The data layer's short names, in the paper's order, with the names the paper prints (from `data.specs`)."""

TABLE1_SOURCE = "paper Table 1 (assets/Industrial.png), ANOMALYCLIP_FACTS.md §2.1"
TABLE1_N_CLASSES = {"mvtec": 15, "visa": 12, "mpdd": 6, "btad": 3, "sdd": 1, "dagm": 10, "dtd": 12}
TABLE1: dict[str, dict[str, tuple[Pair, ...]]] = {
    "image": {
        "mvtec": ((74.1, 87.6), (71.5, 86.4), (91.8, 96.5), (86.1, 93.5), (88.8, 94.8), (91.5, 96.2)),
        "visa": ((66.4, 71.5), (65.0, 70.1), (78.1, 81.2), (78.0, 81.4), (62.8, 68.1), (82.1, 85.4)),
        "mpdd": ((54.3, 65.4), (56.2, 66.0), (63.6, 69.9), (73.0, 80.2), (55.1, 64.2), (77.0, 82.0)),
        "btad": ((34.5, 52.5), (51.0, 62.1), (68.2, 70.9), (73.6, 68.6), (66.8, 77.4), (88.3, 87.3)),
        "sdd": ((65.7, 45.2), (65.2, 45.7), (84.3, 77.4), (79.8, 71.4), (74.9, 65.1), (84.7, 80.0)),
        "dagm": ((79.6, 59.0), (82.5, 63.7), (91.8, 79.5), (94.4, 83.8), (87.5, 74.6), (97.5, 92.3)),
        "dtd": ((71.6, 85.7), (66.8, 83.2), (93.2, 92.6), (86.4, 95.0), None, (93.5, 97.0)),
    },
    "pixel": {
        "mvtec": ((38.4, 11.3), (38.2, 11.6), (85.1, 64.6), (87.6, 44.0), (33.3, 6.7), (91.1, 81.4)),
        "visa": ((46.6, 14.8), (47.8, 17.3), (79.6, 56.8), (94.2, 86.8), (24.2, 3.8), (95.5, 87.0)),
        "mpdd": ((62.1, 33.0), (58.7, 29.1), (76.4, 48.9), (94.1, 83.2), (15.4, 2.3), (96.5, 88.7)),
        "btad": ((30.6, 4.4), (32.8, 8.3), (72.7, 27.3), (60.8, 25.0), (28.6, 3.8), (94.2, 74.8)),
        "sdd": ((39.0, 8.9), (32.5, 5.8), (68.8, 24.2), (79.8, 65.1), (28.9, 7.1), (90.6, 67.8)),
        "dagm": ((28.2, 2.9), (32.7, 4.8), (87.6, 65.7), (82.4, 66.2), (17.5, 2.1), (95.6, 91.0)),
        "dtd": ((33.9, 12.5), (23.7, 5.5), (83.9, 57.8), (95.3, 86.9), None, (97.9, 92.3)),
    },
}
"""Per level and dataset, one (AUROC, AP) or (AUROC, AUPRO) pair per method of `METHODS`. AnomalyCLIP is trained on
MVTec AD for every dataset except MVTec AD, which uses VisA."""
TABLE1_COPIED = frozenset({("mvtec", "WinCLIP"), ("mvtec", "VAND"), ("visa", "WinCLIP"), ("visa", "VAND")})
"""The † cells (at both levels): numbers the authors copied from the original papers instead of running them."""

TABLE2_SOURCE = "paper Table 2 (assets/medical.png), ANOMALYCLIP_FACTS.md §2.2"
TABLE2: dict[str, tuple[str, tuple[Pair, ...]]] = {
    "headct": ("image", ((56.5, 58.4), (60.0, 60.7), (81.8, 80.2), (89.1, 89.4), (78.4, 78.8), (93.4, 91.6))),
    "brainmri": ("image", ((73.9, 81.7), (80.6, 86.4), (86.6, 91.5), (89.3, 90.9), (61.3, 44.9), (90.3, 92.2))),
    "br35h": ("image", ((78.4, 78.8), (82.7, 81.3), (80.5, 82.2), (93.1, 92.9), (86.0, 87.5), (94.6, 94.7))),
    "covid": ("image", ((73.7, 42.4), (75.0, 45.9), (66.4, 42.9), (15.5, 8.5), (25.3, 9.2), (80.1, 58.7))),
    "isic": ("pixel", ((33.1, 5.8), (36.0, 7.7), (83.3, 55.1), (89.4, 77.2), (51.7, 15.9), (89.7, 78.4))),
    "colondb": ("pixel", ((49.5, 15.8), (49.5, 11.5), (70.3, 32.5), (78.4, 64.6), (40.5, 2.6), (81.9, 71.3))),
    "clinicdb": ("pixel", ((47.5, 18.9), (48.5, 12.6), (51.2, 13.8), (80.5, 60.7), (34.8, 2.4), (82.9, 67.8))),
    "kvasir": ("pixel", ((44.6, 17.7), (45.0, 16.8), (69.7, 24.5), (75.0, 36.2), (44.1, 3.5), (78.9, 45.6))),
    "endo": ("pixel", ((45.2, 15.9), (46.6, 12.6), (68.2, 28.3), (81.9, 54.9), (40.6, 3.9), (84.1, 63.6))),
    "tn3k": ("pixel", ((42.3, 7.3), (35.6, 5.2), (70.7, 39.8), (73.6, 37.8), (34.0, 9.5), (81.5, 50.4))),
}
"""Per dataset its level and one pair per method; AnomalyCLIP is trained on MVTec AD."""

LOG_METRICS = ("pixel_auroc", "pixel_aupro", "image_auroc", "image_ap")
"""Column order of the official per-class logs."""
PER_CLASS: dict[str, dict] = {
    "mvtec": {
        "source": "zqhang/AnomalyCLIP results/9_12_4_multiscale/zero_shot/log.txt, ANOMALYCLIP_FACTS.md §2.1",
        "trained_on": "visa",
        "classes": {
            "carpet": (98.8, 90.0, 100.0, 100.0),
            "bottle": (90.4, 80.8, 88.7, 96.8),
            "hazelnut": (97.2, 92.5, 97.2, 98.5),
            "leather": (98.6, 92.2, 99.8, 99.9),
            "cable": (78.9, 64.0, 70.3, 81.7),
            "capsule": (95.8, 87.6, 89.5, 97.8),
            "grid": (97.3, 75.4, 97.8, 99.3),
            "pill": (91.8, 88.1, 81.1, 95.3),
            "transistor": (70.8, 58.2, 93.9, 92.1),
            "metal_nut": (74.6, 71.1, 92.4, 98.2),
            "screw": (97.5, 88.0, 82.1, 92.9),
            "toothbrush": (91.9, 88.5, 85.3, 93.9),
            "zipper": (91.3, 65.4, 98.4, 99.5),
            "tile": (94.7, 87.4, 100.0, 100.0),
            "wood": (96.4, 91.5, 96.9, 99.2),
        },
        "mean": (91.1, 81.4, 91.6, 96.4),
    },
    "visa": {
        "source": "zqhang/AnomalyCLIP results/9_12_4_multiscale_visa/zero_shot/log.txt, ANOMALYCLIP_FACTS.md §2.1",
        "trained_on": "mvtec",
        "classes": {
            "candle": (98.8, 96.5, 80.9, 82.6),
            "capsules": (95.0, 78.9, 82.8, 89.4),
            "cashew": (93.8, 91.9, 76.0, 89.3),
            "chewinggum": (99.3, 90.9, 97.2, 98.8),
            "fryum": (94.6, 86.9, 92.7, 96.6),
            "macaroni1": (98.3, 89.8, 86.7, 85.5),
            "macaroni2": (97.6, 84.0, 72.2, 70.8),
            "pcb1": (94.0, 80.7, 85.2, 86.7),
            "pcb2": (92.4, 78.9, 62.0, 64.4),
            "pcb3": (88.4, 76.8, 61.7, 69.4),
            "pcb4": (95.7, 89.4, 93.9, 94.3),
            "pipe_fryum": (98.2, 96.2, 92.3, 96.3),
        },
        "mean": (95.5, 86.7, 82.0, 85.3),
    },
}
"""Per class (pixel AUROC, pixel AUPRO, image AUROC, image AP) of the released checkpoints; the logged mean differs
from Table 1 by rounding and seed (MVTec image 91.6/96.4 vs 91.5/96.2, VisA 86.7/82.0/85.3 vs 87.0/82.1/85.4)."""

_REBUTTAL = "OpenReview rebuttal"
ABLATIONS: dict[str, dict] = {
    "leave_one_out": {
        "source": f"{_REBUTTAL}, revised Appendix D Table 7, ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("full", "mvtec", "pixel_auroc", 91.1),
            ("full", "mvtec", "image_auroc", 91.5),
            ("full", "visa", "pixel_auroc", 95.5),
            ("full", "visa", "image_auroc", 82.1),
            ("- T1 DPAM", "mvtec", "pixel_auroc", 87.9),
            ("- T1 DPAM", "mvtec", "image_auroc", 80.7),
            ("- T1 DPAM", "visa", "pixel_auroc", 91.9),
            ("- T1 DPAM", "visa", "image_auroc", 73.0),
            ("- T2 object-agnostic prompt", "mvtec", "pixel_auroc", 84.3),
            ("- T2 object-agnostic prompt", "mvtec", "image_auroc", 65.6),
            ("- T3 learnable text-encoder tokens", "mvtec", "pixel_auroc", 90.6),
            ("- T3 learnable text-encoder tokens", "mvtec", "image_auroc", 90.4),
            ("- T4 multi-layer local features", "mvtec", "pixel_auroc", 90.0),
            ("- T4 multi-layer local features", "mvtec", "image_auroc", 91.0),
        ),
    },
    "local_loss": {
        "source": f"{_REBUTTAL}, revised Table 14 (global loss always on), ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("no local loss", "mvtec", "pixel_auroc", 80.3),
            ("no local loss", "visa", "pixel_auroc", 86.6),
            ("Dice only", "mvtec", "pixel_auroc", 87.2),
            ("Dice only", "visa", "pixel_auroc", 90.1),
            ("Focal only", "mvtec", "pixel_auroc", 90.6),
            ("Focal only", "visa", "pixel_auroc", 94.9),
            ("Focal + Dice", "mvtec", "pixel_auroc", 91.1),
            ("Focal + Dice", "visa", "pixel_auroc", 95.5),
        ),
    },
    "backbone": {
        "source": f"{_REBUTTAL}, revised Table 13, ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("ViT-B-16-plus", "mvtec", "pixel_auroc", 90.5),
            ("ViT-L-14", "mvtec", "pixel_auroc", 91.1),
            ("ViT-H-14", "mvtec", "pixel_auroc", 90.8),
        ),
    },
    "shared_prompts": {
        "source": "revised Table 11 (unshared is the default), ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("shared", "mvtec", "pixel_auroc", 90.5),
            ("shared", "mvtec", "image_auroc", 90.9),
            ("shared", "visa", "pixel_auroc", 95.0),
            ("shared", "visa", "image_auroc", 81.5),
        ),
    },
    "attention": {
        "source": "revised Table 12 (V-V alone is the default), ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("ensemble QK+QQ+KK+VV", "mvtec", "pixel_auroc", 90.7),
            ("ensemble QK+QQ+KK+VV", "mvtec", "image_auroc", 90.8),
            ("ensemble QK+QQ+KK+VV", "visa", "pixel_auroc", 94.9),
            ("ensemble QK+QQ+KK+VV", "visa", "image_auroc", 80.7),
        ),
    },
    "prompt_word": {
        "source": "v12 Table 8, revised Tables 16/17 (MVTec image AUROC moves by at most ~0.2), "
        "ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("damaged", "btad", "image_auroc", 88.3),
            ("anomalous/defective", "btad", "image_auroc", 84.8),
            ("damaged", "sdd", "image_auroc", 84.7),
            ("another word (not stated)", "sdd", "image_auroc", 82.3),
        ),
    },
    "auxiliary_data": {
        "source": "paper Tables 2 and 3 as cited by the v12 research note, ANOMALYCLIP_FACTS.md §2.2",
        "rows": (
            ("trained on mvtec", "covid", "image_auroc", 80.1),
            ("trained on colondb", "covid", "image_auroc", 70.9),
        ),
    },
    "full_shot": {
        "source": "v12 Table 7 (full-shot methods train on the target's normal images), ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("PatchCore", "mvtec", "image_auroc", 99.0),
            ("PatchCore", "mvtec", "image_ap", 99.7),
            ("RD4AD", "mvtec", "image_auroc", 98.7),
            ("RD4AD", "mvtec", "image_ap", 99.4),
            ("PatchCore", "visa", "image_auroc", 94.6),
            ("PatchCore", "visa", "image_ap", 95.9),
            ("RD4AD", "visa", "image_auroc", 95.3),
            ("RD4AD", "visa", "image_ap", 95.7),
        ),
    },
    "compute": {
        "source": f"{_REBUTTAL}, revised Table 8, one RTX 3090, ANOMALYCLIP_FACTS.md §2.3",
        "rows": (
            ("AnomalyCLIP", "mvtec", "train_minutes_per_epoch", 13.71),
            ("AnomalyCLIP without DPAM", "mvtec", "train_minutes_per_epoch", 12.98),
            ("CoOp", "mvtec", "train_minutes_per_epoch", 12.25),
            ("CLIP", None, "inference_fps", 13.23),
            ("WinCLIP", None, "inference_fps", 1.2),
            ("AnomalyCLIP", None, "inference_fps", 8.92),
        ),
    },
}
"""Per ablation its source and rows of (setting, dataset or None, metric, value); metrics are the four of `METRICS`
plus `train_minutes_per_epoch` and `inference_fps`."""

LATER_TARGETS_SOURCE = "ANOMALYCLIP_FACTS.md §4, suggested targets under the AnomalyCLIP protocol"
LATER_TARGETS = (
    ("Bayes-PFL", "mvtec", "image_auroc", 92.5, "UniADet README"),
    ("Bayes-PFL", "visa", "image_auroc", 87.0, "UniADet README"),
    ("VCP-CLIP", "visa", "pixel_aupro", 90.7, "VCP-CLIP paper row quoted in xiaozhen228/VCP-CLIP issue #3"),
)
"""The strongest non-transductive later numbers: (method, dataset, metric, value, where it is quoted)."""

TABLE_COLUMNS = (
    "table",
    "dataset",
    "domain",
    "method",
    "level",
    "metric",
    "value",
    "source",
    "copied_from_original",
)


class PaperDataError(AnomalyCLIPError, ValueError):
    """A table, dataset, method or metric the paper's data does not hold."""


def _check(kind: str, value: object, known: tuple | list) -> None:
    if value not in known:
        raise PaperDataError(f"unknown {kind} {value!r}; expected one of {list(known)}")


def _table_rows(table: int) -> list[tuple]:
    """(dataset, domain, level, pairs, source, copied) per row of Table 1 or 2."""
    if table == 1:
        return [
            (dataset, "industrial", level, pairs, TABLE1_SOURCE, TABLE1_COPIED)
            for level, rows in TABLE1.items()
            for dataset, pairs in rows.items()
        ]
    return [
        (dataset, "medical", level, pairs, TABLE2_SOURCE, frozenset()) for dataset, (level, pairs) in TABLE2.items()
    ]


def paper_table(table: int) -> pd.DataFrame:
    """Table 1 (industrial) or 2 (medical) in long form, one row per cell value; '–' cells are NaN."""
    _check("paper table", table, [1, 2])
    records = [
        (
            table,
            dataset,
            domain,
            method,
            level,
            metric,
            math.nan if pair is None else value,
            source,
            (dataset, method) in copied,
        )
        for dataset, domain, level, pairs, source, copied in _table_rows(table)
        for method, pair in zip(METHODS, pairs, strict=True)
        for metric, value in zip(LEVEL_METRICS[level], pair or (None, None), strict=True)
    ]
    return pd.DataFrame(records, columns=list(TABLE_COLUMNS))


def paper_results() -> pd.DataFrame:
    """Tables 1 and 2 together, in long form."""
    return pd.concat([paper_table(1), paper_table(2)], ignore_index=True)


def paper_value(dataset: str, metric: str, method: str = "AnomalyCLIP") -> float:
    """One number of Table 1 or 2 (NaN for a '–' cell); an error when the paper does not report it."""
    _check("dataset", dataset, list(DATASET_NAMES))
    _check("metric", metric, METRICS)
    _check("method", method, METHODS)
    results = paper_results()
    cell = results[(results.dataset == dataset) & (results.metric == metric) & (results.method == method)]
    if cell.empty:
        reported = sorted(results.loc[results.dataset == dataset, "metric"].unique())
        raise PaperDataError(f"the paper reports no {metric} for {dataset!r}; it reports {reported}")
    return float(cell.value.iloc[0])


def paper_per_class(dataset: str, *, include_mean: bool = False) -> pd.DataFrame:
    """Per-class log of the released checkpoint for `mvtec` or `visa` in long form; `mean` rows are the log's."""
    _check("per-class dataset", dataset, list(PER_CLASS))
    log = PER_CLASS[dataset]
    rows = {**log["classes"], **({"mean": log["mean"]} if include_mean else {})}
    records = [
        (dataset, name, log["trained_on"], metric, value, log["source"])
        for name, values in rows.items()
        for metric, value in zip(LOG_METRICS, values, strict=True)
    ]
    return pd.DataFrame(records, columns=["dataset", "class", "trained_on", "metric", "value", "source"])


def paper_ablations(name: str | None = None) -> pd.DataFrame:
    """The published ablations (all, or the one named) in long form."""
    if name is not None:
        _check("ablation", name, list(ABLATIONS))
    records = [
        (ablation, setting, dataset, metric, value, entry["source"])
        for ablation, entry in ABLATIONS.items()
        if name in (None, ablation)
        for setting, dataset, metric, value in entry["rows"]
    ]
    return pd.DataFrame(records, columns=["ablation", "setting", "dataset", "metric", "value", "source"])


def later_targets() -> pd.DataFrame:
    """Later zero-shot numbers above AnomalyCLIP under its protocol, as targets beyond the paper."""
    return pd.DataFrame(
        [(*row, f"{quoted}; {LATER_TARGETS_SOURCE}") for *row, quoted in LATER_TARGETS],
        columns=["method", "dataset", "metric", "value", "source"],
    )


@dataclass(frozen=True)
class Artefact:
    """One table or figure of the paper (or its revised appendix) and where this project regenerates it."""

    key: str
    title: str
    where: str
    """Where the paper (or its rebuttal) shows it."""
    notebook: str | None
    """The numbered notebook that regenerates it; None when no notebook does (`why_not` says why)."""
    outputs: tuple[str, ...] = ()
    """File-name prefixes of its tables/figures under a report folder (`tables/<prefix>*`, `figures/<prefix>*`)."""
    numbers: str | None = None
    """The paper's numbers beside it: `table1`, `table2`, `per_class`, or a key of `ABLATIONS`."""
    why_not: str = ""


ARTEFACTS: tuple[Artefact, ...] = (
    Artefact("table1", "Industrial datasets, six methods", "Table 1", "06_evaluation_17_datasets",
             ("06_table1",), "table1"),
    Artefact("table2", "Medical datasets, six methods", "Table 2", "06_evaluation_17_datasets",
             ("06_table2",), "table2"),
    Artefact("per_class", "Per-class results of the released checkpoints", "official results/*/log.txt",
             "06_evaluation_17_datasets", ("06_per_class",), "per_class"),
    Artefact("table3", "Medical datasets, prompts tuned on ColonDB", "Table 3", "07_medical_tuning",
             ("07_table3",), "auxiliary_data"),
    Artefact("table4", "Module ablation (T1 DPAM, T2 object-agnostic prompts, T3 text tokens, T4 multi-layer), "
             "incremental and leave-one-out", "Table 4; revised appendix Table 7 (leave-one-out)",
             "08_module_ablation", ("08_modules", "08_leave_one_out"), "leave_one_out"),
    Artefact("table5", "Global and local losses; Focal and Dice", "Table 5; revised Table 14", "05_training",
             ("05_losses",), "local_loss"),
    Artefact("fig6", "DPAM variants Q-Q, K-K, V-V and off; attention ensembles; DPAM blocks",
             "Fig. 6; revised Table 12", "04_vv_attention_ablation", ("04_dpam",), "attention"),
    Artefact("fig3", "Attention maps of the original and DPAM paths", "Fig. 3", "04_vv_attention_ablation",
             ("04_attention_maps",)),
    Artefact("prompt_design", "Object-agnostic vs object-aware, CoOp variants, shared contexts",
             "Tables 9-11 (revised)", "02_prompt_design", ("02_prompt_design",), "shared_prompts"),
    Artefact("state_word", "The state word ('damaged', 'anomalous', ...)", "Tables 16/17 (revised); v12 Table 8",
             "02_prompt_design", ("02_state_word",), "prompt_word"),
    Artefact("fig7", "Prompt length E, text-token depth and length, lambda", "Fig. 7", "03_deep_text_prompting",
             ("03_sweep",)),
    Artefact("table13", "Backbones ViT-B-16-plus, ViT-L-14, ViT-H-14", "revised Table 13", "08_module_ablation",
             ("08_backbones",), "backbone"),
    Artefact("table8", "Training minutes per epoch and inference speed", "revised Table 8", "05_training",
             ("05_compute",), "compute"),
    Artefact("fig1", "Similarity maps of CLIP, WinCLIP, CoOp and AnomalyCLIP on cross-domain images", "Fig. 1",
             "01_clip_misalignment", ("01_figure1",)),
    Artefact("qualitative", "Anomaly maps of anomalous images, 12 per dataset", "appendix figures",
             "06_evaluation_17_datasets", ("06_qualitative",)),
    Artefact("failure_cases", "Failure cases: highest-scoring normal and lowest-scoring anomalous images",
             "not in the paper (this project's)", "06_evaluation_17_datasets", ("06_failure_cases",)),
    Artefact("clip_misalignment", "How much of CLIP's image score follows the category and how much the label",
             "not in the paper (this project's analysis)", "01_clip_misalignment", ("01_clip",)),
    Artefact("full_shot", "Against full-shot PatchCore and RD4AD", "v12 Table 7", None, numbers="full_shot",
             why_not="full-shot methods train on the target's normal images: outside this zero-shot replication"),
)  # fmt: skip
"""Every artefact of the paper, in the order the scorecard lists them."""
