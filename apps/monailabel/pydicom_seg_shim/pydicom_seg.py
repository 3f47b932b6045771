# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``pydicom_seg`` for MONAI Label next to pydicom 3: re-exports ``pydicom_seg_rb`` (the ``pydicom-seg-rb`` fork, which
imports ``pydicom.uid.SegmentationStorage`` instead of pydicom 2's ``pydicom._storage_sopclass_uids``)."""

import sys

import pydicom_seg_rb
from pydicom_seg_rb import *  # noqa: F401,F403
from pydicom_seg_rb import reader, template, writer  # noqa: F401

__version__ = pydicom_seg_rb.__version__
__all__ = list(pydicom_seg_rb.__all__)
# `import pydicom_seg.template` etc. resolve to the fork's submodules
for _name in ("template", "reader", "writer"):
    sys.modules[f"{__name__}.{_name}"] = getattr(pydicom_seg_rb, _name)
