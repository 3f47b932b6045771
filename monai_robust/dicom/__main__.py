# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``python -m monai_robust.dicom screen --bundle B --input DICOM_FOLDER --output OUT``: see :func:`main`."""

from __future__ import annotations

import sys

from monai_robust.dicom import main

if __name__ == "__main__":
    sys.exit(main())
