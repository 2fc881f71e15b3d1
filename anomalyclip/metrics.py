"""Evaluation metrics of AnomalyCLIP: image and pixel AUROC and AP, max-F1, and AUPRO (official and reference).

Every number is exact (no histogram approximation). Per category all pixel scores are kept in one array, sorted once
(only its top part when AUPRO alone needs it), and the anomalous pixels' scores are kept apart with the id of their
connected ground-truth region (labelled once per mask, 8-connectivity). Each metric reads its thresholds off these
arrays with `searchsorted` instead of re-binarising the maps; what it counts of the normal pixels is the count over
all pixels minus the anomalous ones'. Undefined metrics (e.g. AUROC of a category without normal images) are NaN
with a reason, never an exception; malformed input raises `MetricError`.

The official AUPRO grid is built in the maps' precision, at least float32: the official pipeline holds float32 maps,
and a float32 grid reproduces its numbers exactly (a float64 grid moves AUPRO by ~1e-6, a float16 one by ~1e-2).
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage

from anomalyclip.errors import MetricError

PAPER_METRICS = ("pixel_auroc", "pixel_aupro", "image_auroc", "image_ap")
EXTRA_METRICS = ("pixel_ap", "pixel_aupro_reference", "pixel_f1_max", "image_f1_max")
ALL_METRICS = PAPER_METRICS + EXTRA_METRICS
THRESHOLD_KEYS = {"pixel_f1_max": "pixel_f1_threshold", "image_f1_max": "image_f1_threshold"}
AUPRO_VARIANTS = {"official": "pixel_aupro", "reference": "pixel_aupro_reference"}
OFFICIAL_STEPS = 200

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_RESERVED_BYTES = 1 << 28  # room the pixel scores of a category take at once: 64 M float32 scores


class _Result(NamedTuple):
    """One metric: its value (NaN when undefined), why it is undefined, and its threshold for max-F1."""

    value: float
    reason: str | None = None
    threshold: float = math.nan


def _sort_top(values: np.ndarray, count: int) -> int:
    """Reorder `values` in place so that values[start:] is sorted, holds at least the `count` largest values and
    every copy of each of its values, and everything before `start` is smaller. Returns `start`."""
    start = values.size - max(count, 1)
    if start <= 0:
        values.sort()
        return 0
    values.partition(start)
    values[start:].sort()
    ties = int(np.count_nonzero(values[:start] == values[start]))
    if ties:
        values[:start].partition(start - ties)
    return start - ties


@dataclass
class _Scores:
    """Scores of both classes together, sorted in place only as far as needed, and of the positive class in input
    order. Negatives are never split out: what a metric counts of them is the count over all scores minus the
    positives' own. `unit` names them in messages ("pixels", "images").
    """

    values: np.ndarray
    pos_input: np.ndarray
    unit: str
    _sorted_from: int = field(default=-1, init=False, repr=False)

    @property
    def n_pos(self) -> int:
        """Number of positive-class scores."""
        return self.pos_input.size

    @property
    def n_neg(self) -> int:
        """Number of negative-class scores."""
        return self.values.size - self.pos_input.size

    def top(self, count: int) -> np.ndarray:
        """At least the `count` largest scores of both classes, sorted ascending, with every copy of their values."""
        if self._sorted_from < 0 or self.values.size - self._sorted_from < count:
            self._sorted_from = _sort_top(self.values, count)
        ranked = self.values[self._sorted_from :]
        if ranked.size <= count:
            return ranked
        return ranked[int(_search(ranked, ranked[-count], "left")) :]  # from the first copy of the count-th largest

    @cached_property
    def pos_sorted(self) -> np.ndarray:
        """Positive-class scores sorted ascending."""
        return np.sort(self.pos_input)

    @cached_property
    def pos_groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct positive scores, ascending, with how many positives have each and how many score below it."""
        pos = self.pos_sorted
        first = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        return pos[first], np.diff(np.r_[first, pos.size]), first

    @cached_property
    def neg_ranks(self) -> tuple[np.ndarray, np.ndarray]:
        """For each distinct positive score: how many negatives score below it, and how many equal it."""
        distinct, counts, pos_below = self.pos_groups
        below, equal = _ranks(self.top(self.values.size), distinct, counts)
        return below - pos_below, equal

    def neg_top(self, count: int) -> np.ndarray:
        """At least the `count` largest negatives, sorted ascending, with every copy of each of their values."""
        top = self.top(count + self.n_pos)
        distinct, counts, _ = self.pos_groups
        inside = distinct >= top[0]
        counts = counts[inside]
        starts = np.repeat(_search(top, distinct[inside], "left"), counts)
        offsets = np.arange(starts.size) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = np.ones(top.size, bool)
        keep[starts + offsets] = False  # the positives' own copies of each score
        return top[keep]

    @cached_property
    def pr_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Distinct positive scores (where recall changes) with their counts, and TP, FP of `score >= each`."""
        distinct, counts, pos_below = self.pos_groups
        return distinct, counts, self.n_pos - pos_below, self.n_neg - self.neg_ranks[0]

    @cached_property
    def pos_order(self) -> np.ndarray:
        """Indices that sort the positive-class scores, for per-pixel weights."""
        return np.argsort(self.pos_input, kind="stable")


@dataclass
class _PixelScores(_Scores):
    """Pixel scores plus, for AUPRO, the region id of each positive pixel, the region areas and the map range."""

    region: np.ndarray
    areas: np.ndarray
    lo: np.floating
    hi: np.floating


# ----------------------------------------------------------------------------------------------- input checks


def _to_numpy(array: Any) -> np.ndarray:
    """NumPy view of an array-like; torch tensors are detached and moved to the CPU first."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _as_stack(name: str, array: Any) -> np.ndarray:
    """(N, H, W) array; (N, 1, H, W) is squeezed as the official code does."""
    array = _to_numpy(array)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise MetricError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {array.shape}")
    return array


def _check_pixels(
    masks: Any, maps: Any, first_index: int = 0
) -> tuple[np.ndarray, np.ndarray, np.floating, np.floating]:
    """Validated (bool masks, float maps) and the maps' min and max; errors name the offending image by its index
    in the category."""
    masks, maps = _as_stack("masks", masks), _as_stack("maps", maps)
    if masks.shape != maps.shape:
        raise MetricError(f"masks and maps differ in shape: masks {masks.shape}, maps {maps.shape}")
    if not np.issubdtype(maps.dtype, np.floating):
        raise MetricError(f"maps must be floating point, got dtype {maps.dtype}")
    if maps.size == 0:
        raise MetricError(f"maps of shape {maps.shape} hold no pixels")
    lo, hi = maps.min(), maps.max()  # NaN propagates to both: a finite range means finite maps
    if not (np.isfinite(lo) and np.isfinite(hi)):
        index = first_index + int(np.argmin(np.isfinite(maps).reshape(len(maps), -1).all(axis=1)))
        raise MetricError(f"anomaly map of image {index} holds NaN or inf")
    if masks.dtype == np.uint8 and masks.max() <= 1:
        masks = masks.view(bool)  # bytes 0 and 1 are numpy's booleans: no copy
    elif masks.dtype != bool:
        positive = masks != 0
        if not (masks[positive] == 1).all():
            wrong = positive & (masks != 1)
            i = int(np.argmax(wrong.reshape(len(masks), -1).any(axis=1)))
            raise MetricError(
                f"mask of image {first_index + i} is not binary (holds {masks[i][wrong[i]].flat[0]!r}); "
                "binarise it first, e.g. masks > 0.5 as the official loader does"
            )
        masks = positive
    return masks, maps, lo, hi


def _check_images(labels: Any, scores: Any, n_images: int, first_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validated (bool labels, float64 scores), one of each per image."""
    labels, scores = _to_numpy(labels).reshape(-1), _to_numpy(scores).reshape(-1)
    if labels.shape != (n_images,) or scores.shape != (n_images,):
        raise MetricError(
            f"expected one label and one score per image ({n_images}), got labels {labels.shape}, scores {scores.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise MetricError(f"image labels must be 0 (normal) or 1 (anomalous), got values {np.unique(labels)}")
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise MetricError(f"image score of image {first_index + int(np.argmin(np.isfinite(scores)))} is NaN or inf")
    return labels.astype(bool), scores


def _check_request(metrics: Sequence[str], fpr_limit: float) -> tuple[str, ...]:
    """The requested metric names, after checking them and the FPR limit."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise MetricError(f"unknown metric(s) {unknown}; known: {list(ALL_METRICS)}")
    if not 0 < fpr_limit <= 1:
        raise MetricError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    return metrics


# ------------------------------------------------------------------------------------------ ranking metrics


def _search(sorted_values: np.ndarray, needles: Any, side: str) -> np.ndarray:
    """np.searchsorted with the needles cast to the haystack's dtype (which they share in value).

    Without the cast numpy copies the whole haystack when the needles' dtype is an equal but distinct descriptor,
    as np.arange returns: 0.1 s per call on 26 M pixels.
    """
    return np.searchsorted(sorted_values, np.asarray(needles, dtype=sorted_values.dtype), side)


def _ranks(
    sorted_values: np.ndarray, sorted_needles: np.ndarray, own: np.ndarray, block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For sorted, distinct needles found among the sorted values `own` times each: how many values lie below each
    needle, and how many equal it beyond its own copies.

    Needles are searched a block at a time, each block only in the window of values that its first needle and the
    next block's first needle delimit, so that the binary searches stay in cache (a third faster on 45 M pixel
    scores). A needle with further copies has one as a rule; only those with more are searched a second time.
    """
    edges = np.r_[_search(sorted_values, sorted_needles[::block], "left"), sorted_values.size].tolist()
    below, extra = np.empty(sorted_needles.size, np.intp), np.zeros(sorted_needles.size, np.intp)
    for i, (start, stop) in enumerate(itertools.pairwise(edges)):
        part = slice(i * block, (i + 1) * block)
        window, needles = sorted_values[start:stop], sorted_needles[part]
        first = _search(window, needles, "left")
        past_own = first + own[part]
        tied = np.flatnonzero(window.take(past_own, mode="clip") == needles)
        tied = tied[past_own[tied] < window.size]
        after = past_own[tied] + 1
        more = tied[(after < window.size) & (window.take(after, mode="clip") == needles[tied])]
        extra[i * block + tied] = 1
        extra[i * block + more] = _search(window, needles[more], "right") - past_own[more]
        below[part] = first + start
    return below, extra


def _two_class_reason(scores: _Scores, metric: str) -> str | None:
    """Why `metric` is undefined for these scores (a class is missing), or None."""
    for size, kind in ((scores.n_pos, "anomalous"), (scores.n_neg, "normal")):
        if size == 0:
            return f"no {kind} {scores.unit} in this category: {metric} is undefined"
    return None


def _auroc(scores: _Scores, fpr_limit: float) -> _Result:
    """Mann-Whitney AUROC with mid-ranks for ties, which is exactly sklearn's roc_auc_score."""
    reason = _two_class_reason(scores, "AUROC")
    if reason:
        return _Result(math.nan, reason)
    _, counts, _ = scores.pos_groups
    below, equal = scores.neg_ranks
    twice_u = int(counts @ (2 * below + equal))  # per positive: negatives below it twice, tied ones once
    return _Result(twice_u / (2 * scores.n_pos * scores.n_neg))


def _average_precision(scores: _Scores, fpr_limit: float) -> _Result:
    """Step-wise average precision, sum of recall increments times precision, as sklearn's average_precision_score.

    Without normal samples AP is 1 whatever the scores (sklearn says so too); it is reported undefined instead, as
    AUROC is, so that a table never shows a perfect score that measures nothing.
    """
    reason = _two_class_reason(scores, "AP")
    if reason:
        return _Result(math.nan, reason)
    _, counts, tp, fp = scores.pr_points
    return _Result(float(np.sum(counts / scores.pos_input.size * (tp / (tp + fp)))))


def _max_f1(scores: _Scores, fpr_limit: float) -> _Result:
    """Best F1 over all thresholds (anomalous iff score >= threshold); ties go to the highest threshold."""
    if scores.pos_input.size == 0:
        return _Result(math.nan, f"no anomalous {scores.unit} in this category: F1 is undefined")
    values, _, tp, fp = scores.pr_points
    f1 = 2 * tp / (tp + fp + scores.pos_input.size)
    best = f1.size - 1 - int(np.argmax(f1[::-1]))
    return _Result(float(f1[best]), threshold=float(values[best]))


# -------------------------------------------------------------------------------------------------- AUPRO


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Signed trapezoid area, summed in the same order as numpy.trapezoid (and so sklearn.metrics.auc)."""
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


def _top_count(fpr_limit: float, n: int) -> int:
    """How many of the largest negatives decide every FPR below the limit (one spare for rounding in limit * n)."""
    return min(n, math.floor(fpr_limit * n) + 2)


def _pro_reason(scores: _PixelScores) -> str | None:
    """Why AUPRO is undefined (no ground-truth region or no normal pixel), or None."""
    if scores.areas.size == 0:
        return "no anomalous pixels (no ground-truth region) in this category: AUPRO is undefined"
    if scores.n_neg == 0:
        return "no normal pixels in this category: the FPR of AUPRO is undefined"
    return None


def _official_grid(lo: np.floating, hi: np.floating) -> np.ndarray:
    """The official thresholds np.arange(min, max, (max - min) / 200), in the maps' precision (at least float32)."""
    dtype = np.promote_types(np.asarray(lo).dtype, np.float32)
    lo, hi = dtype.type(lo), dtype.type(hi)
    step = (hi - lo) / dtype.type(OFFICIAL_STEPS)
    return np.arange(lo, hi, step) if step > 0 else np.empty(0, dtype)


def _region_fractions(scores: _PixelScores, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of each ground-truth region scoring `> threshold`, shape (thresholds, regions).

    Each region's scores are sorted once and counted above all thresholds with one search.
    """
    grouped = scores.pos_input[np.argsort(scores.region, kind="stable")]
    hits = np.empty((scores.areas.size, thresholds.size), np.intp)
    for region, (start, stop) in enumerate(itertools.pairwise([0, *np.cumsum(scores.areas).tolist()])):
        ranked = np.sort(grouped[start:stop])
        hits[region] = ranked.size - _search(ranked, thresholds, "right")
    return np.ascontiguousarray((hits / scores.areas[:, None]).T)


def _aupro_official(scores: _PixelScores, fpr_limit: float) -> _Result:
    """AnomalyCLIP's cal_pro_score: 200-step grid, FPR < limit kept, FPRs min-max rescaled, trapezoid area."""
    reason = _pro_reason(scores)
    if reason:
        return _Result(math.nan, reason)
    grid = _official_grid(scores.lo, scores.hi)
    if grid.size == 0:
        return _Result(math.nan, f"all map values are equal ({scores.lo}): the official threshold grid is empty")
    n = scores.n_neg
    top = scores.top(_top_count(fpr_limit, n) + scores.n_pos)  # holds enough of the largest negatives
    grid = grid[grid >= top[0]]  # at lower thresholds so many negatives are false positives that FPR > limit
    above = top.size - _search(top, grid, "right") - (scores.n_pos - _search(scores.pos_sorted, grid, "right"))
    fpr = above / n
    pro = _region_fractions(scores, grid).mean(axis=1)
    keep = fpr < fpr_limit
    x = fpr[keep]
    if x.size < 2 or x.max() == x.min():
        return _Result(
            math.nan,
            f"{x.size} official thresholds give FPR < {fpr_limit} with {np.unique(x).size} distinct FPR values: "
            "the min-max rescaling of cal_pro_score is undefined",
        )
    x = (x - x.min()) / (x.max() - x.min())
    return _Result(-_trapezoid(x, pro[keep]))


def _count_within(fpr_limit: float, n: int) -> int:
    """The most negatives k whose FPR k / n (in floating point, as in the curve) is still <= the limit."""
    k = min(n, math.floor(fpr_limit * n))
    while k < n and (k + 1) / n <= fpr_limit:
        k += 1
    while k > 0 and k / n > fpr_limit:
        k -= 1
    return k


def _aupro_reference(scores: _PixelScores, fpr_limit: float) -> _Result:
    """MVTec reference AUPRO: every distinct score a threshold, curve cut at the limit by interpolation, / limit.

    The curve has one segment per distinct negative score v, from (FPR(> v), PRO(> v)) to (FPR(>= v), PRO(>= v)).
    Summed over the segments within the limit, the trapezoids equal, per anomalous pixel, its weight
    1 / (region area * regions) times the number of those negatives below it (ties counted half), divided by n.
    """
    reason = _pro_reason(scores)
    if reason:
        return _Result(math.nan, reason)
    n = scores.n_neg
    top = scores.neg_top(_top_count(fpr_limit, n))
    pos = scores.pos_input[scores.pos_order]
    weights = (1.0 / (scores.areas * scores.areas.size))[scores.region[scores.pos_order]]
    inner = top.size - _count_within(fpr_limit, n)  # segments of thresholds >= top[inner] lie within the limit
    if 0 < inner < top.size and top[inner - 1] == top[inner]:
        inner = int(_search(top, top[inner], "right"))
    below = np.maximum(_search(top, pos, "left") - inner, 0)
    below_or_tied = np.maximum(_search(top, pos, "right") - inner, 0)
    area = float(weights @ (below + below_or_tied)) / (2 * n)
    if inner > 0:  # the next lower threshold's segment crosses the limit: interpolate on it
        u = top[inner - 1]
        x0, x1 = (top.size - inner) / n, (top.size - int(_search(top, u, "left"))) / n
        y0, y1 = weights[_search(pos, u, "right") :].sum(), weights[_search(pos, u, "left") :].sum()
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area += (fpr_limit - x0) * (y0 + y_limit) / 2
    return _Result(float(area / fpr_limit))


_METRICS = {
    "pixel_auroc": _auroc,
    "pixel_ap": _average_precision,
    "pixel_f1_max": _max_f1,
    "pixel_aupro": _aupro_official,
    "pixel_aupro_reference": _aupro_reference,
    "image_auroc": _auroc,
    "image_ap": _average_precision,
    "image_f1_max": _max_f1,
}


# ------------------------------------------------------------------------------------------ accumulation


def _regions(mask: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and 1-based 8-connected region ids of one map's anomalous pixels (raster order), and the region count.

    Only the mask's bounding box is read: for the small defects of real datasets that is most of the saving.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    inside = mask[box]
    labels, count = ndimage.label(inside, structure=_EIGHT_CONNECTED)
    return scores[box][inside], labels[inside], count


_SPARE_ROOM: list[np.ndarray] = []  # the reserved room of the last pixel-score column dropped, for the next one


def _take_room(size: int, dtype: np.dtype) -> np.ndarray:
    """An empty array of at least `size` values: the spare room if it fits (see `_Column`), else a new array (and a
    spare that does not fit is let go)."""
    try:
        room = _SPARE_ROOM.pop()
    except IndexError:
        return np.empty(size, dtype)
    return room if room.dtype == dtype and room.size >= size else np.empty(size, dtype)


class _Column:
    """A 1-D array filled batch by batch, grown by doubling like a list, with room for `reserve` values from the start.

    Memory pages are committed only when written, so room costs address space, not RAM: a category's scores are then
    written once, never gathered from a list of batches into a second copy. When the column is dropped, its reserved
    room goes to the next column that reserves room: the first write to a fresh page is a page fault, which costs as
    much as the copy itself (several times more on a busy machine), once per category otherwise.
    """

    def __init__(self, dtype: np.dtype | type, reserve: int = 0) -> None:
        self._data = np.empty(0, dtype)
        self._reserve = reserve
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        """Append `values` (cast to the column's dtype)."""
        end = self.size + values.size
        if end > self._data.size:
            size = max(end, 2 * self._data.size, self._reserve)
            grown = _take_room(size, self._data.dtype) if size == self._reserve else np.empty(size, self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : end] = values.reshape(-1)
        self.size = end

    @property
    def values(self) -> np.ndarray:
        """The values so far (a view)."""
        return self._data[: self.size]

    def __del__(self) -> None:
        """Hand the reserved room on (see the class docstring), unless a view of it is still alive."""
        unviewed = sys.getrefcount(self._data) == 2  # this attribute and getrefcount's own argument
        if self._reserve and self._data.size == self._reserve and unviewed:
            _SPARE_ROOM[:] = [self._data]


def _image_split(labels: np.ndarray, scores: np.ndarray) -> _Scores:
    """Image scores and their bool labels (`scores` is sorted in place later)."""
    return _Scores(scores, scores[labels], "images")


def _is_aupro(name: str) -> bool:
    """Whether a metric is one of the AUPRO variants."""
    return "aupro" in name


class CategoryAccumulator:
    """Collects one category batch by batch and computes its metrics.

    Keeps all pixel scores in one growing array (in the maps' dtype, at least float32), and the scores and region
    ids of anomalous pixels; never a float64 copy of float32 maps. Maps must keep one precision across batches,
    since it fixes the official AUPRO grid.
    """

    def __init__(self) -> None:
        self._values: _Column | None = None
        self._pos: _Column | None = None
        self._region = _Column(np.intp)
        self._areas = _Column(np.intp)
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._dtype: np.dtype | None = None
        self._lo: np.floating | None = None
        self._hi: np.floating | None = None
        self._n_images = 0

    @property
    def n_images(self) -> int:
        """Images added so far."""
        return self._n_images

    def update(self, masks: Any, maps: Any, labels: Any = None, scores: Any = None) -> None:
        """Add a batch: masks and maps (B, H, W), and optionally image labels and scores (B,) for image metrics."""
        masks, maps, lo, hi = _check_pixels(masks, maps, self._n_images)
        with_images = labels is not None or scores is not None
        if self._n_images and with_images != bool(self._labels):
            raise MetricError("give image labels and scores with every batch of a category or with none")
        if with_images:
            labels, scores = _check_images(labels, scores, len(maps), self._n_images)
        if self._dtype is not None and maps.dtype != self._dtype:
            raise MetricError(f"maps changed dtype between batches: {self._dtype} before, {maps.dtype} now")
        self._add_pixels(masks, maps, lo, hi)
        if with_images:
            self._labels.append(labels)
            self._scores.append(scores)
        self._n_images += len(maps)

    def set_images(self, labels: Any, scores: Any) -> None:
        """Image labels and scores of all images added so far, at once (after a method's category-level rescoring)."""
        if self._labels:
            raise MetricError("image labels and scores were already given with the batches")
        labels, scores = _check_images(labels, scores, self._n_images)
        self._labels, self._scores = [labels], [scores]

    def _add_pixels(self, masks: np.ndarray, maps: np.ndarray, lo: np.floating, hi: np.floating) -> None:
        """Append a validated batch's scores, and its anomalous pixels' scores and region ids; widen the map range."""
        if self._dtype is None:
            self._dtype = maps.dtype
            working = np.promote_types(maps.dtype, np.float32)
            self._values, self._pos = _Column(working, _RESERVED_BYTES // working.itemsize), _Column(working)
        self._values.extend(maps)
        for i in np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1)):
            scores, ids, count = _regions(masks[i], maps[i])
            self._pos.extend(scores)
            self._region.extend(ids + (self._areas.size - 1))
            self._areas.extend(np.bincount(ids, minlength=count + 1)[1:])
        self._lo = lo if self._lo is None else min(self._lo, lo)
        self._hi = hi if self._hi is None else max(self._hi, hi)

    def _pixel_scores(self) -> _PixelScores:
        """All pixel scores in the working precision (the maps' dtype, at least float32)."""
        return _PixelScores(
            self._values.values,
            self._pos.values,
            "pixels",
            self._region.values,
            self._areas.values,
            self._lo,
            self._hi,
        )

    def _image_scores(self) -> _Scores:
        """Image scores split by label."""
        if not self._labels:
            raise MetricError("image metrics need image labels and scores; pass them to update()")
        labels, scores = np.concatenate(self._labels), np.concatenate(self._scores)
        return _image_split(labels, scores)

    def compute(self, metrics: Sequence[str] = PAPER_METRICS, fpr_limit: float = 0.3) -> dict[str, Any]:
        """Metric name -> value (NaN when undefined), the F1 thresholds, and `reasons`: metric -> why undefined."""
        metrics = _check_request(metrics, fpr_limit)
        if self._n_images == 0:
            raise MetricError("no images were added to this category")
        data: dict[str, _Scores] = {}
        if any(m.startswith("pixel_") for m in metrics):
            data["pixel"] = self._pixel_scores()
        if any(m.startswith("image_") for m in metrics):
            data["image"] = self._image_scores()
        # AUPRO needs only the top negatives sorted: run it after any metric that sorts them all.
        results = {name: _METRICS[name](data[name.split("_")[0]], fpr_limit) for name in sorted(metrics, key=_is_aupro)}
        out: dict[str, Any] = {}
        for name in metrics:
            out[name] = results[name].value
            if name in THRESHOLD_KEYS:
                out[THRESHOLD_KEYS[name]] = results[name].threshold
        out["reasons"] = {name: results[name].reason for name in metrics if results[name].reason}
        return out


# ------------------------------------------------------------------------------------------ entry points


def evaluate_category(
    masks: Any,
    maps: Any,
    labels: Any = None,
    scores: Any = None,
    metrics: Sequence[str] = PAPER_METRICS,
    fpr_limit: float = 0.3,
) -> dict[str, Any]:
    """Metrics of one category from all its masks and maps (N, H, W) and image labels and scores (N,)."""
    accumulator = CategoryAccumulator()
    accumulator.update(masks, maps, labels, scores)
    return accumulator.compute(metrics, fpr_limit)


def _single(result: dict[str, Any], name: str) -> float:
    """The value of one metric; warns with the reason when it is undefined (NaN)."""
    if name in result["reasons"]:
        warnings.warn(result["reasons"][name], RuntimeWarning, stacklevel=3)
    return result[name]


def aupro(masks: Any, maps: Any, variant: str = "official", fpr_limit: float = 0.3) -> float:
    """AUPRO in [0, 1]: `official` = AnomalyCLIP's cal_pro_score, `reference` = MVTec AD's (exact, / fpr_limit)."""
    if variant not in AUPRO_VARIANTS:
        raise MetricError(f"unknown AUPRO variant {variant!r}; choose one of {list(AUPRO_VARIANTS)}")
    name = AUPRO_VARIANTS[variant]
    return _single(evaluate_category(masks, maps, metrics=(name,), fpr_limit=fpr_limit), name)


def pixel_auroc(masks: Any, maps: Any) -> float:
    """AUROC over all pixels of all maps, equal to sklearn's roc_auc_score."""
    return _single(evaluate_category(masks, maps, metrics=("pixel_auroc",)), "pixel_auroc")


def pixel_ap(masks: Any, maps: Any) -> float:
    """Average precision over all pixels, equal to sklearn's average_precision_score."""
    return _single(evaluate_category(masks, maps, metrics=("pixel_ap",)), "pixel_ap")


def pixel_max_f1(masks: Any, maps: Any) -> tuple[float, float]:
    """Best pixel F1 and its threshold (a pixel is anomalous iff its score >= threshold)."""
    result = evaluate_category(masks, maps, metrics=("pixel_f1_max",))
    return _single(result, "pixel_f1_max"), result["pixel_f1_threshold"]


def _image_result(labels: Any, scores: Any, name: str) -> dict[str, Any]:
    """Compute one image metric from labels and scores alone."""
    labels, scores = _to_numpy(labels).reshape(-1), _to_numpy(scores).reshape(-1)
    labels, scores = _check_images(labels, scores, labels.size)
    result = _METRICS[name](_image_split(labels, scores), 0.3)
    return {
        name: result.value,
        "threshold": result.threshold,
        "reasons": {name: result.reason} if result.reason else {},
    }


def image_auroc(labels: Any, scores: Any) -> float:
    """Image AUROC, equal to sklearn's roc_auc_score."""
    return _single(_image_result(labels, scores, "image_auroc"), "image_auroc")


def image_ap(labels: Any, scores: Any) -> float:
    """Image average precision, equal to sklearn's average_precision_score."""
    return _single(_image_result(labels, scores, "image_ap"), "image_ap")


def image_max_f1(labels: Any, scores: Any) -> tuple[float, float]:
    """Best image F1 and its threshold (an image is anomalous iff its score >= threshold)."""
    result = _image_result(labels, scores, "image_f1_max")
    return _single(result, "image_f1_max"), result["threshold"]


# ------------------------------------------------------------------------------------------------- tables


def _percent(value: float) -> str:
    """A fraction as percent with one decimal, rounded by np.round as the official log does; 'n/a' for NaN."""
    return "n/a" if math.isnan(value) else f"{np.round(value * 100, decimals=1):.1f}"


@dataclass(frozen=True)
class MetricTable:
    """Per-category metrics and their mean row: full precision in `data`, the paper's layout in `table`.

    `data` holds fractions (NaN where undefined; F1 thresholds have no mean). `reasons` maps (row, metric) to why a
    cell is NaN or, for the mean row, which categories it leaves out.
    """

    data: pd.DataFrame
    reasons: dict[tuple[str, str], str]

    @property
    def table(self) -> pd.DataFrame:
        """Percent with one decimal as in the official log (np.round); 'n/a' if undefined, '*' marks a footnote."""
        metrics = [c for c in self.data.columns if c in ALL_METRICS]
        cells = pd.DataFrame(
            [[_percent(v) for v in row] for row in self.data[metrics].to_numpy()],
            index=self.data.index,
            columns=metrics,
        )
        for (row, column), _ in self.reasons.items():
            if column in metrics and cells.at[row, column] != "n/a":
                cells.at[row, column] += "*"
        return cells

    def to_markdown(self) -> str:
        """The table as a Markdown pipe table, followed by one footnote per reason."""
        cells = self.table
        header = ["objects", *cells.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join([str(row), *cells.loc[row]]) + " |" for row in cells.index]
        lines += [f"- {row} / {column}: {text}" for (row, column), text in self.reasons.items()]
        return "\n".join(lines)


def summarize(per_category: Mapping[str, Mapping[str, Any]]) -> MetricTable:
    """Table of per-category results (as from `evaluate_category`) with a `mean` row over the categories."""
    if not per_category:
        raise MetricError("summarize needs at least one category")
    present = {k for result in per_category.values() for k in result}
    columns = [c for name in ALL_METRICS for c in (name, THRESHOLD_KEYS.get(name)) if c in present]
    data = pd.DataFrame(
        [[float(result.get(c, math.nan)) for c in columns] for result in per_category.values()],
        index=list(per_category),
        columns=columns,
        dtype=float,
    )
    reasons = {
        (category, metric): text
        for category, result in per_category.items()
        for metric, text in result.get("reasons", {}).items()
    }
    mean_row, mean_reasons = _mean_row(data)
    data.loc["mean"] = mean_row
    reasons.update(mean_reasons)
    return MetricTable(data, reasons)


def _mean_row(data: pd.DataFrame) -> tuple[pd.Series, dict[tuple[str, str], str]]:
    """Mean over categories per metric, leaving out (and naming) the categories where a metric is undefined."""
    mean = pd.Series(math.nan, index=data.columns)
    reasons: dict[tuple[str, str], str] = {}
    for column in data.columns:
        if column not in ALL_METRICS:
            continue
        defined = data[column].notna()
        if defined.any():
            mean[column] = float(np.mean(data.loc[defined, column].to_numpy()))
        if not defined.all():
            missing = ", ".join(data.index[~defined])
            reasons["mean", column] = (
                f"mean over {int(defined.sum())} of {len(data)} categories; undefined for {missing}"
            )
    return mean, reasons
