# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""MONAI bundles: the project's own two, shipped inside the package (:mod:`.packaged`: ``packaged_bundles``,
``copy_bundle``; not imported here, so that ``python -m monai_robust.bundle.packaged`` runs cleanly)."""
