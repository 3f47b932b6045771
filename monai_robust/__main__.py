# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""``python -m monai_robust ...``: the ``monai-robust`` command (see :mod:`monai_robust.bundle.cli`)."""

import sys

from monai_robust.bundle.cli import main

if __name__ == "__main__":
    sys.exit(main())
