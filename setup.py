# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Packaging beyond ``pyproject.toml`` (which holds everything else): the repository's ``bundles/`` folder goes into the
wheel as package data, ``monai_robust/_bundles/<name>/...``, so that :func:`monai_robust.bundle.copy.copy_bundle`
(``monai-robust bundle copy NAME DIR``) can hand a user the project's MONAI bundles from an installed package."""

import os

from setuptools import find_namespace_packages, find_packages, setup

# every folder of a bundle is a data-only "package" (setuptools treats each directory so), mapped from bundles/;
# what a run leaves in a bundle (data/, models/, outputs/: git-ignored) never goes into the wheel
RUN_OUTPUTS = ["data", "models", "outputs"]
BUNDLE_DIRS = ["monai_robust._bundles", *(f"monai_robust._bundles.{p}" for p in find_namespace_packages(
    where="bundles", exclude=["*__pycache__*", *(f"*.{d}" for d in RUN_OUTPUTS), *(f"*.{d}.*" for d in RUN_OUTPUTS)]))]

setup(
    packages=[*find_packages(include=["monai_robust*"]), *BUNDLE_DIRS],
    package_dir={"monai_robust._bundles": "bundles"},
    # the files of each bundle folder by name (a "*" glob would also pull in the run outputs below it)
    package_data={p: [f.name for f in os.scandir(os.path.join("bundles", *p.split(".")[2:])) if f.is_file()]
                  for p in BUNDLE_DIRS},
    include_package_data=False,
)
