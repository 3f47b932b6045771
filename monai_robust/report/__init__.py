# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Rendering of a robustness evaluation: strict JSON, PNG figures (matplotlib Agg), an HTML page, a console table."""

from __future__ import annotations

from .html import render_html
from .plots import plot_detector_histograms, plot_examples, plot_metric_vs_eps
from .table import format_table, summary_rows
from .writer import to_jsonable, write_json, write_report

__all__ = [
    "format_table",
    "plot_detector_histograms",
    "plot_examples",
    "plot_metric_vs_eps",
    "render_html",
    "summary_rows",
    "to_jsonable",
    "write_json",
    "write_report",
]
