"""Read and write the official `meta.json` (interop with zqhang/AnomalyCLIP and the projects derived from it).

Format: {"train": {category: [item, ...]}, "test": {...}},
item = {img_path, mask_path ('' when none), cls_name, specie_name, anomaly (0/1)},
paths relative to the dataset root (some official scripts write absolute ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from anomalyclip.data.records import MISSING_FILE, NORMAL, Listing, Problem, Record
from anomalyclip.errors import DataError

META_JSON = "meta.json"
ITEM_KEYS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


def read_meta_json(path: str | Path, root: str | Path | None = None) -> Listing:
    """Records from a meta.json; `root` (default: its folder) is what the relative paths start from."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read meta.json ({err}); expected the official JSON format") from err
    if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
        raise DataError(f"{path}: expected {{'train': {{category: [items]}}, 'test': {{...}}}} at the top level")
    listing = Listing()
    for phase, categories in meta.items():
        for category, items in categories.items():
            for index, item in enumerate(items):
                missing = [k for k in ITEM_KEYS if k not in item and k != "specie_name"]
                if missing:
                    raise DataError(f"{path}: {phase}/{category}[{index}] lacks {missing}; expected keys {ITEM_KEYS}")
                label = int(item["anomaly"])
                mask = root / item["mask_path"] if label and item["mask_path"] else None
                if mask is not None and mask.is_dir():
                    mask = None  # the official loader reads a folder here as "no mask" (classification only)
                defect = item.get("specie_name") or ("anomaly" if label else NORMAL)
                record = Record(root / item["img_path"], mask, item["cls_name"], defect, label, phase.lower())
                listing.records.append(record)
                listing.problems += [
                    Problem(MISSING_FILE, p, f"{p}: listed in {path} but absent", record.category, record)
                    for p in (record.image, record.mask)
                    if p is not None and not p.is_file()
                ]
    return listing


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def meta_json_dict(records: Iterable[Record], root: str | Path) -> dict:
    """The official meta.json structure for `records`, paths relative to `root` where they lie under it."""
    root = Path(root)
    meta: dict[str, dict[str, list[dict]]] = {"train": {}, "test": {}}
    for r in records:
        if r.crop is not None:
            raise DataError(
                f"{r.name}: a cropped record cannot be written to meta.json; "
                "expected whole files (write SDD crops first with anomalyclip.data.adapters.prepare_sdd)"
            )
        meta.setdefault(r.split, {}).setdefault(r.category, []).append(
            {
                "img_path": _relative(Path(r.image), root),
                "mask_path": _relative(Path(r.mask), root) if r.mask is not None else "",
                "cls_name": r.category,
                "specie_name": r.defect,
                "anomaly": int(r.label),
            }
        )
    return meta


def write_meta_json(records: Iterable[Record], root: str | Path, path: str | Path | None = None) -> Path:
    """Write the official meta.json (default ROOT/meta.json) and return its path."""
    path = Path(path) if path is not None else Path(root) / META_JSON
    path.write_text(json.dumps(meta_json_dict(records, root), indent=4) + "\n")
    return path
