# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""The MONAI Label app of monai_robust: ``monailabel start_server --app apps/monailabel --studies DATA
--conf bundles '{"xray": "bundles/robust_xray_classification"}'`` (see monai_robust.integrations.monailabel_app)."""

from monai_robust.integrations.monailabel_app import RobustClassificationApp

__all__ = ["RobustClassificationApp"]
