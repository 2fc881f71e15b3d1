"""The torch Dataset and DataLoader: batched items of the right shapes through worker processes."""

from __future__ import annotations

import torch
from test_data_layouts import make_mvtec

from anomalyclip.data import AnomalyDataset, load_records, make_loader


def test_loader_batches_with_workers(tmp_path):
    records = load_records(make_mvtec(tmp_path, defects=("scratch", "dent"), n=3), "mvtec")
    dataset = AnomalyDataset(records, image_size=42)
    batches = list(make_loader(dataset, batch_size=4, num_workers=2))
    assert [len(b["label"]) for b in batches] == [4, 4, 1]
    first = batches[0]
    assert first["image"].shape == (4, 3, 42, 42) and first["image"].dtype == torch.float32
    assert first["mask"].shape == (4, 1, 42, 42) and first["mask"].dtype == torch.uint8
    assert set(first["mask"].unique().tolist()) <= {0, 1}
    labels = torch.cat([b["label"] for b in batches])
    masks = torch.cat([b["mask"] for b in batches])
    assert labels.tolist() == [r.label for r in records]
    assert ((masks.flatten(1).amax(1) > 0).long() == labels).all()
    assert batches[0]["category"][0] == "widget" and batches[0]["path"][0] == str(records[0].image)


def test_shuffle_is_seeded(tmp_path):
    dataset = AnomalyDataset(load_records(make_mvtec(tmp_path, n=4), "mvtec"), image_size=14)

    def order(seed):
        return [p for b in make_loader(dataset, 3, shuffle=True, num_workers=0, seed=seed) for p in b["path"]]

    assert order(1) == order(1) and sorted(order(1)) == sorted(order(2))
