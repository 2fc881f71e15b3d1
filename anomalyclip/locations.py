"""Where the package finds what ships beside its code: the checkout when it runs from one, else the installed copy.

A source checkout (editable install or PYTHONPATH) has pyproject.toml and notebooks/ next to the package; a wheel
carries the notebooks inside the package as `anomalyclip/notebooks` (see setup.py) and has no git state.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SHARED_ENV = "ANOMALYCLIP_SHARED"


def checkout_root() -> Path | None:
    """The source checkout holding this package, or None when it runs from an installed copy."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def notebooks_dir() -> Path:
    """The numbered notebooks: the checkout's notebooks/ (what JupyterLab opens), else the copy in the package."""
    root = checkout_root()
    return root / "notebooks" if root is not None else Path(str(resources.files("anomalyclip") / "notebooks"))


def shared_dir() -> Path | None:
    """The read-only shared bundle: $ANOMALYCLIP_SHARED, else `shared/` beside the checkout; None for neither."""
    if SHARED_ENV in os.environ:
        return Path(os.environ[SHARED_ENV])
    root = checkout_root()
    return root.parent / "shared" if root is not None else None
