"""Metrics: equal to the official numbers, to plain loop oracles and to sklearn; clear errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score
from support import require_shared

from anomalyclip import metrics as M
from anomalyclip.errors import MetricError

# ------------------------------------------------------------------------------------------------- oracles


def official_aupro_loop(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """AnomalyCLIP's cal_pro_score written as the plain loop it is; NaN where the official code fails or gives NaN."""
    maps = maps.astype(np.promote_types(maps.dtype, np.float32))
    lo, hi = maps.min(), maps.max()
    step = (hi - lo) / maps.dtype.type(200)
    if not step > 0:
        return math.nan
    regions = [ndimage.label(mask, structure=np.ones((3, 3)))[0] for mask in masks]
    negative = masks == 0
    pros, fprs = [], []
    for th in np.arange(lo, hi, step):
        binary = maps > th
        fractions = []
        for detected, labelled in zip(binary, regions, strict=True):
            for r in range(1, labelled.max() + 1):
                region = labelled == r
                fractions.append(detected[region].sum() / region.sum())
        pros.append(np.mean(fractions) if fractions else math.nan)
        fprs.append(np.logical_and(negative, binary).sum() / negative.sum())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < fpr_limit
    x = fprs[keep]
    if x.size < 2 or x.max() == x.min():
        return math.nan
    return auc((x - x.min()) / (x.max() - x.min()), pros[keep])


def reference_aupro_simple(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """MVTec AD's compute_pro: sort all pixels, cumulative FPR and PRO per distinct score, cut at the limit."""
    weights = np.zeros(masks.shape)
    regions = [ndimage.label(mask, structure=np.ones((3, 3)))[0] for mask in masks]
    n_regions = sum(r.max() for r in regions)
    for i, labelled in enumerate(regions):
        for r in range(1, labelled.max() + 1):
            weights[i][labelled == r] = 1.0 / ((labelled == r).sum() * n_regions)
    negative = masks.ravel() == 0
    order = np.argsort(-maps.ravel().astype(np.float64), kind="stable")
    scores = maps.ravel()[order]
    fpr = np.cumsum(negative[order] / negative.sum())
    pro = np.cumsum(weights.ravel()[order])
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    x, y = np.r_[0.0, fpr[last_of_tie]], np.r_[0.0, pro[last_of_tie]]
    inside = x <= fpr_limit
    area = np.trapezoid(y[inside], x[inside])
    k = inside.sum()
    if k < x.size and x[k - 1] < fpr_limit:
        y_limit = np.interp(fpr_limit, x[k - 1 : k + 1], y[k - 1 : k + 1])
        area += (fpr_limit - x[k - 1]) * (y[k - 1] + y_limit) / 2
    return area / fpr_limit


def random_case(
    seed: int, n: int = 5, h: int = 24, w: int = 30, dtype=np.float32, levels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random maps, brighter on a few random rectangular defects; `levels` quantises them to force ties."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(1, n):
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            masks[i, y : y + rng.integers(1, 8), x : x + rng.integers(1, 8)] = 1
    masks[-1, 0, 0] = 1
    maps = ndimage.gaussian_filter(rng.normal(size=(n, h, w)), (0, 1.5, 1.5)) + 0.3 * masks
    if levels:
        maps = np.round(maps * levels) / levels
    return masks, maps.astype(dtype)


# --------------------------------------------------------------------------------------- official numbers


def test_equals_official_numbers_on_a_realistic_category():
    data = np.load(require_shared("conformance", "metrics_category.npz"))
    result = M.evaluate_category(data["masks"], data["maps"], data["image_labels"], data["image_scores"])
    for name in M.PAPER_METRICS:
        assert abs(result[name] - float(data[name])) <= 1e-6, name
    assert result["reasons"] == {}


@pytest.mark.parametrize("bundle", ["default", "nodpam"])
def test_equals_official_numbers_of_conformance_bundles(bundle):
    data = np.load(require_shared("conformance", bundle, "expected.npz"))
    result = M.evaluate_category(data["masks"], data["anomaly_map"], data["labels"], data["image_scores"])
    for name in M.PAPER_METRICS:
        assert abs(result[name] - float(data[f"metric_{name}"])) <= 1e-6, name


# ------------------------------------------------------------------------------------------------ AUPRO


@pytest.mark.parametrize(
    ("seed", "shape", "dtype", "levels"),
    [
        (0, (5, 24, 30), np.float32, None),
        (1, (3, 17, 9), np.float32, None),
        (2, (6, 20, 20), np.float64, None),
        (3, (4, 16, 16), np.float16, None),
        (4, (5, 24, 30), np.float32, 4),
        (5, (8, 12, 12), np.float64, 2),
    ],
)
def test_official_aupro_equals_the_loop(seed, shape, dtype, levels):
    masks, maps = random_case(seed, *shape, dtype=dtype, levels=levels)
    expected = official_aupro_loop(masks, maps)
    assert M.aupro(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_official_aupro_with_a_region_on_the_border_and_empty_masks():
    masks, maps = random_case(7, 6, 20, 25)
    masks[:] = 0
    masks[2, -5:, -4:] = 1
    masks[2, 0, :] = 1
    maps[2, -5:, -4:] += 0.5
    assert M.aupro(masks, maps) == pytest.approx(official_aupro_loop(masks, maps), abs=1e-12)


def test_official_aupro_counts_diagonal_neighbours_as_one_region():
    masks = np.zeros((1, 6, 6), np.uint8)
    masks[0, 1, 1] = masks[0, 2, 2] = 1
    maps = np.linspace(0, 1, 36, dtype=np.float32).reshape(1, 6, 6)
    maps[0, 1, 1] = 2.0
    assert M.aupro(masks, maps) == pytest.approx(official_aupro_loop(masks, maps), abs=1e-12)


def test_aupro_of_constant_maps_is_nan_with_a_reason():
    masks, _ = random_case(8)
    maps = np.full(masks.shape, 0.5, np.float32)
    assert math.isnan(official_aupro_loop(masks, maps))
    result = M.evaluate_category(masks, maps, metrics=("pixel_aupro",))
    assert math.isnan(result["pixel_aupro"])
    assert "grid is empty" in result["reasons"]["pixel_aupro"]
    with pytest.warns(RuntimeWarning, match="grid is empty"):
        assert math.isnan(M.aupro(masks, maps))


def test_aupro_without_any_region_is_nan_with_a_reason():
    _, maps = random_case(9)
    result = M.evaluate_category(np.zeros(maps.shape, bool), maps, metrics=("pixel_aupro", "pixel_aupro_reference"))
    assert math.isnan(result["pixel_aupro"]) and math.isnan(result["pixel_aupro_reference"])
    assert "no ground-truth region" in result["reasons"]["pixel_aupro_reference"]


@pytest.mark.parametrize(
    ("seed", "levels", "fpr_limit"),
    [(10, None, 0.3), (11, 3, 0.3), (12, None, 0.05), (13, 2, 1.0), (14, None, 0.7), (16, 1, 0.05)],
)
def test_reference_aupro_equals_a_simple_implementation(seed, levels, fpr_limit):
    masks, maps = random_case(seed, 6, 20, 22, levels=levels)
    expected = reference_aupro_simple(masks, maps, fpr_limit)
    assert M.aupro(masks, maps, "reference", fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_reference_aupro_is_one_for_a_perfect_map():
    masks, _ = random_case(15)
    assert M.aupro(masks, masks.astype(np.float32) + 0.1, "reference") == pytest.approx(1.0)


@pytest.mark.parametrize("count", [0, 1, 7, 50, 99, 100])
def test_partial_sort_keeps_whole_tie_groups_on_top(count):
    values = np.random.default_rng(count).integers(0, 6, 100).astype(np.float32)
    expected = np.sort(values)
    start = M._sort_top(values, count)
    assert values.size - start >= count
    assert np.array_equal(values[start:], expected[start:])
    assert start == 0 or values[:start].max() < values[start]


# ----------------------------------------------------------------------------------- ranking metrics


@pytest.mark.parametrize(
    ("seed", "dtype", "levels"), [(20, np.float32, None), (21, np.float16, 8), (22, np.float64, 2)]
)
def test_pixel_metrics_equal_sklearn(seed, dtype, levels):
    masks, maps = random_case(seed, 6, 32, 32, dtype=dtype, levels=levels)
    truth, scores = masks.ravel(), maps.ravel().astype(np.float64)
    assert abs(M.pixel_auroc(masks, maps) - roc_auc_score(truth, scores)) <= 1e-9
    assert abs(M.pixel_ap(masks, maps) - average_precision_score(truth, scores)) <= 1e-9
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
    best, threshold = M.pixel_max_f1(masks, maps)
    assert best == pytest.approx(f1.max(), abs=1e-12)
    assert f1[np.searchsorted(thresholds, threshold)] == pytest.approx(best, abs=1e-12)


def test_pixel_metrics_equal_sklearn_with_signed_zeros_and_negative_scores():
    masks, maps = random_case(23, 6, 24, 24, levels=3)  # ties on a few levels, negative ones among them
    for pixels in np.flatnonzero(masks)[:6], np.flatnonzero(masks == 0)[:40]:
        maps.flat[pixels[::2]], maps.flat[pixels[1::2]] = -0.0, 0.0  # zeros of both signs in both classes
    assert (maps < 0).any()
    truth, scores = masks.ravel(), maps.ravel().astype(np.float64)
    assert abs(M.pixel_auroc(masks, maps) - roc_auc_score(truth, scores)) <= 1e-12
    assert abs(M.pixel_ap(masks, maps) - average_precision_score(truth, scores)) <= 1e-12
    precision, recall, _ = precision_recall_curve(truth, scores)
    assert M.pixel_max_f1(masks, maps)[0] == pytest.approx(np.max(2 * precision * recall / (precision + recall)))
    assert M.aupro(masks, maps) == pytest.approx(official_aupro_loop(masks, maps), abs=1e-12)
    assert M.aupro(masks, maps, "reference") == pytest.approx(reference_aupro_simple(masks, maps), abs=1e-9)


def test_all_equal_pixel_scores_equal_sklearn():
    masks, _ = random_case(24)
    maps = np.full(masks.shape, -1.5, np.float32)
    truth, scores = masks.ravel(), maps.ravel()
    assert M.pixel_auroc(masks, maps) == roc_auc_score(truth, scores)
    assert abs(M.pixel_ap(masks, maps) - average_precision_score(truth, scores)) <= 1e-12


def test_image_metrics_equal_sklearn_with_ties():
    rng = np.random.default_rng(30)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)
    assert abs(M.image_auroc(labels, scores) - roc_auc_score(labels, scores)) <= 1e-12
    assert abs(M.image_ap(labels, scores) - average_precision_score(labels, scores)) <= 1e-12
    best, threshold = M.image_max_f1(labels, scores)
    predicted = scores >= threshold
    assert best == pytest.approx(2 * (predicted & (labels == 1)).sum() / (predicted.sum() + labels.sum()))


def test_channel_axis_is_squeezed_as_in_the_official_code():
    masks, maps = random_case(41)
    assert M.pixel_auroc(masks[:, None], maps[:, None]) == M.pixel_auroc(masks, maps)


def test_streaming_batches_equals_one_call():
    masks, maps = random_case(40, 9, 20, 20)
    labels, scores = masks.any(axis=(1, 2)).astype(int), maps.max(axis=(1, 2))
    accumulator = M.CategoryAccumulator()
    for start in range(0, 9, 4):
        batch = slice(start, start + 4)
        accumulator.update(masks[batch], maps[batch], labels[batch], scores[batch])
    assert accumulator.n_images == 9
    streamed = accumulator.compute(M.ALL_METRICS)
    assert streamed == M.evaluate_category(masks, maps, labels, scores, M.ALL_METRICS)


def test_streaming_through_growing_arrays_equals_one_call(monkeypatch):
    monkeypatch.setattr(M, "_RESERVED_BYTES", 64)  # no room reserved: every array grows by doubling
    masks, maps = random_case(42, 11, 16, 18, levels=6)
    labels, scores = masks.any(axis=(1, 2)).astype(int), maps.max(axis=(1, 2))
    accumulator = M.CategoryAccumulator()
    for start, stop in [(0, 1), (1, 2), (2, 6), (6, 11)]:
        accumulator.update(masks[start:stop], maps[start:stop], labels[start:stop], scores[start:stop])
        if start == 1:
            accumulator.compute(M.ALL_METRICS)  # sorts what it holds so far; later batches append to it
    assert accumulator.compute(M.ALL_METRICS) == M.evaluate_category(masks, maps, labels, scores, M.ALL_METRICS)


PIXEL_METRICS = tuple(name for name in M.ALL_METRICS if name.startswith("pixel_"))


def test_a_dropped_category_hands_its_room_on_without_leaking_its_scores(monkeypatch):
    monkeypatch.setattr(M, "_RESERVED_BYTES", 1 << 16)  # room for 16 Ki scores: both categories fit in it
    monkeypatch.setattr(M, "_SPARE_ROOM", [])
    big, small = random_case(70, 8, 30, 30), random_case(71, 4, 20, 20, levels=5)
    first = M.CategoryAccumulator()
    first.update(*big)
    first.compute(PIXEL_METRICS)
    room = id(first._values._data)  # not a reference: one would keep the room from being handed on
    del first
    assert [id(spare) for spare in M._SPARE_ROOM] == [room]
    second = M.CategoryAccumulator()
    second.update(*small)
    assert id(second._values._data) == room  # holds the first category's scores beyond the second's
    reused = second.compute(PIXEL_METRICS)
    monkeypatch.setattr(M, "_SPARE_ROOM", [])
    assert reused == M.evaluate_category(*small, metrics=PIXEL_METRICS)  # in fresh room
    assert abs(reused["pixel_auroc"] - roc_auc_score(small[0].ravel(), small[1].ravel())) <= 1e-12


def test_room_still_viewed_is_not_handed_on(monkeypatch):
    monkeypatch.setattr(M, "_SPARE_ROOM", [])
    accumulator = M.CategoryAccumulator()
    accumulator.update(*random_case(72))
    scores = accumulator._values.values
    del accumulator
    assert M._SPARE_ROOM == [] and scores.size > 0


@pytest.mark.parametrize("block", [1, 2, 3, 4096])
def test_blocked_ranks_equal_searchsorted(block):
    rng = np.random.default_rng(block)
    values = np.sort(rng.integers(0, 12, 60).astype(np.float32))
    needles, own = np.unique(values[rng.integers(0, 60, 9)], return_counts=True)  # found among values, with ties
    own = np.minimum(own, np.searchsorted(values, needles, "right") - np.searchsorted(values, needles, "left"))
    below, extra = M._ranks(values, needles, own, block)
    assert np.array_equal(below, np.searchsorted(values, needles, "left"))
    assert np.array_equal(below + own + extra, np.searchsorted(values, needles, "right"))


@pytest.mark.parametrize("block", [1, 2, 4096])
def test_ranks_count_further_copies_of_every_length(block):
    further = np.array([0, 1, 2, 3, 1, 0, 1])  # copies beyond a needle's own; the last needle ends the values
    own = np.random.default_rng(block).integers(1, 3, further.size)
    needles = np.arange(further.size, dtype=np.float32) * 2
    values = np.sort(np.r_[np.repeat(needles, own + further), needles[:-1] + 1]).astype(np.float32)
    below, extra = M._ranks(values, needles, own, block)
    assert np.array_equal(below, np.searchsorted(values, needles, "left"))
    assert np.array_equal(below + own + extra, np.searchsorted(values, needles, "right"))


# -------------------------------------------------------------------------------------------------- tables


def test_summary_has_a_mean_row_in_percent_and_names_undefined_cells():
    masks, maps = random_case(50, 6)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    good = M.evaluate_category(masks, maps, labels, scores, M.ALL_METRICS)
    only_anomalous = M.evaluate_category(masks[1:], maps[1:], labels[1:] * 0 + 1, scores[1:], M.ALL_METRICS)
    summary = M.summarize({"a": good, "b": only_anomalous})
    assert math.isnan(summary.data.at["b", "image_auroc"])
    assert summary.data.at["mean", "image_auroc"] == good["image_auroc"]
    assert summary.data.at["mean", "pixel_auroc"] == pytest.approx(
        (good["pixel_auroc"] + only_anomalous["pixel_auroc"]) / 2
    )
    assert "pixel_f1_threshold" in summary.data.columns and "pixel_f1_threshold" not in summary.table.columns
    assert math.isnan(summary.data.at["mean", "pixel_f1_threshold"])
    assert list(summary.table.columns[:4]) == list(M.PAPER_METRICS)
    assert summary.table.at["b", "image_auroc"] == "n/a"
    assert summary.table.at["mean", "image_auroc"].endswith("*")
    assert summary.table.at["a", "pixel_auroc"] == f"{np.round(good['pixel_auroc'] * 100, 1):.1f}"
    text = summary.to_markdown()
    assert "no normal images" in text and "mean over 1 of 2 categories" in text


# ----------------------------------------------------------------------------------------------- bad input


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(MetricError, match=r"\(2, 8, 8\).*\(2, 8, 9\)"):
        M.aupro(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_nan_in_a_map_names_the_image_across_batches():
    masks, maps = random_case(60, 4)
    accumulator = M.CategoryAccumulator()
    accumulator.update(masks[:2], maps[:2])
    maps[3, 1, 1] = np.inf
    with pytest.raises(MetricError, match="image 3 "):
        accumulator.update(masks[2:], maps[2:])


def test_non_binary_masks_are_refused():
    masks, maps = random_case(61)
    masks = masks * 255
    with pytest.raises(MetricError, match="not binary.*255"):
        M.pixel_auroc(masks, maps)


def test_category_without_anomalous_images_gives_nan_with_reason():
    _, maps = random_case(62)
    result = M.evaluate_category(np.zeros(maps.shape), maps, np.zeros(len(maps)), maps.max(axis=(1, 2)))
    for name in M.PAPER_METRICS:
        assert math.isnan(result[name]), name
    assert "no anomalous images" in result["reasons"]["image_auroc"]
    assert "no anomalous pixels" in result["reasons"]["pixel_auroc"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, a: M.aupro(m, a, variant="mvtec"), "unknown AUPRO variant"),
        (lambda m, a: M.aupro(m, a, fpr_limit=0.0), "fpr_limit"),
        (lambda m, a: M.evaluate_category(m, a, metrics=("pixel_iou",)), "unknown metric"),
        (lambda m, a: M.evaluate_category(m, a), "need image labels"),
        (lambda m, a: M.evaluate_category(m, a, [0, 1], [0.1, 0.2]), "one label and one score per image"),
        (lambda m, a: M.evaluate_category(m, a, [0, 2, 1, 1, 1], a.max(axis=(1, 2))), "labels must be 0"),
        (lambda m, a: M.pixel_auroc(m, a.astype(int)), "floating point"),
        (lambda m, a: M.pixel_auroc(m[0], a[0]), "shape"),
    ],
)
def test_bad_requests_raise_metric_error(call, message):
    masks, maps = random_case(63)
    with pytest.raises(MetricError, match=message):
        call(masks, maps)


def test_dtype_change_between_batches_is_refused():
    masks, maps = random_case(64, 4)
    accumulator = M.CategoryAccumulator()
    accumulator.update(masks[:2], maps[:2])
    with pytest.raises(MetricError, match="dtype"):
        accumulator.update(masks[2:], maps[2:].astype(np.float64))


def test_image_ap_without_normal_images_is_undefined_not_perfect():
    from anomalyclip.metrics import evaluate_category

    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[:, 1, 1] = True
    result = evaluate_category(masks, np.random.default_rng(0).random((3, 4, 4)), [1, 1, 1], [0.2, 0.5, 0.9])
    assert np.isnan(result["image_ap"]) and np.isnan(result["image_auroc"])
    assert "no normal images" in result["reasons"]["image_ap"]
    assert result["pixel_auroc"] == result["pixel_auroc"], "pixel metrics stay defined"
