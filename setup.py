"""What pyproject.toml cannot say: the top-level notebooks/ folder ships inside the package as
`anomalyclip/notebooks`, so `anomalyclip reproduce` works after `pip install` while git keeps one copy."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["anomalyclip*"]), "anomalyclip.notebooks"],
    package_dir={"anomalyclip.notebooks": "notebooks"},
)
