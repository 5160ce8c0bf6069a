"""Which packages the hotpipe wheel carries; every other piece of metadata is in pyproject.toml.

The top-level folders ``shared/``, ``producer/`` and ``workers/`` are source roots, each holding
one subpackage at its import path (``shared/hotpipe/shared/store.py`` is ``hotpipe.shared.store``);
``hotpipe/`` is the root package.  A folder missing from the tree is simply not packaged: the API
image copies no ``workers/``, so its wheel has no ``hotpipe.workers`` (and no torch-side code).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent
SOURCE_ROOTS = ("shared", "producer", "workers")


def layout() -> tuple[list[str], dict[str, str]]:
    """The packages found under each present source root, and the folder each one lives in."""
    packages, package_dir = ["hotpipe"], {"hotpipe": "hotpipe"}
    for root in SOURCE_ROOTS:
        if not (HERE / root / "hotpipe").is_dir():
            continue
        for package in find_namespace_packages(where=str(HERE / root), include=["hotpipe.*"]):
            packages.append(package)
            package_dir[package] = "/".join([root, *package.split(".")])
    return packages, package_dir


PACKAGES, PACKAGE_DIR = layout()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR, package_data={"hotpipe.shared": ["lua/*.lua"]})
