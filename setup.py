# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Packaging beyond ``pyproject.toml`` (which holds everything else): the repository's ``bundles/`` folder goes into the
wheel as package data, ``monai_robust/_bundles/<name>/...``, so that :func:`monai_robust.bundle.copy.copy_bundle`
(``monai-robust bundle copy NAME DIR``) can hand a user the project's MONAI bundles from an installed package."""

from setuptools import find_namespace_packages, find_packages, setup

# every folder of a bundle is a data-only "package" (setuptools treats each directory so), mapped from bundles/
BUNDLE_DIRS = ["monai_robust._bundles", *(f"monai_robust._bundles.{p}" for p in find_namespace_packages(
    where="bundles", exclude=["*__pycache__*"]))]

setup(
    packages=[*find_packages(include=["monai_robust*"]), *BUNDLE_DIRS],
    package_dir={"monai_robust._bundles": "bundles"},
    package_data={p: ["*"] for p in BUNDLE_DIRS},
)
