# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``python -m monai_robust.dicom screen|serve ...``: see :func:`monai_robust.integrations.dicom.cli.main`."""

from __future__ import annotations

import sys

from monai_robust.integrations.dicom.cli import main

if __name__ == "__main__":
    sys.exit(main())
