# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import json
import math

import torch

from monai_robust.report import format_table, summary_rows, to_jsonable, write_report


def results():
    row = {
        "eps": 0.01, "eps_physical": 20.0, "status": "ok", "n": 10, "accuracy": 0.5, "auc": 0.6, "sensitivity": 0.4,
        "specificity": 0.6, "attack_success_rate": 0.375,
        "performance_retained": {"accuracy": 0.625, "auc": 0.7, "balanced_accuracy": 0.4375},
        "balanced_accuracy": 0.55, "auc_n": 10, "auc_note": "", "prediction_histogram": {"normal": 9, "pneumonia": 1},
        "intervals": {"accuracy": [0.19, 0.81], "balanced_accuracy": [0.3, 0.8], "auc": [0.3, 0.9]},
        "collapse": {"collapsed": False, "balanced_enough": True, "unpredicted_classes": [], "note": ""},
        "perceptibility": {"linf": {"mean": 0.01}, "l2": {"mean": 0.2}, "psnr_db": {"mean": 40.0}, "ssim": {"mean": 0.99}},
        "per_class": {"normal": {"n": 5, "auc": 0.6, "sensitivity": 0.6, "specificity": 0.4}},
    }
    return {
        "meta": {"n": 10, "bounds": [0.0, 1.0], "intensity_map": {"slope": 0.0005, "units": "HU"}, "complete": True},
        "clean": {"n": 10, "accuracy": 0.8, "balanced_accuracy": 0.9, "auc": 0.9, "auc_n": 10, "sensitivity": 0.75,
                  "specificity": 0.85, "per_class": {}},
        "attacks": {
            "pgd": {"lp": "inf", "kind": "iterative", "attack": "PGD(eps=0.01)", "results": [row, dict(
                row, eps=0.02, accuracy=0.1, prediction_histogram={"normal": 10, "pneumonia": 0},
                collapse={"collapsed": True, "note": "collapsed: class normal predicted for 100.0% of 10 images"})]},
            "cw": {"lp": "2", "kind": "minimal", "attack": "CW()", "results": [{"eps": None, "status": "failed", "error": "ImportError: no cw"}]},
        },
        "controls": {"noise": [{"lp": "inf", "eps": 0.01, "accuracy": 0.8, "n": 10}]},
        "uaps": {},
        "validity": [{"name": "gradients", "status": "fail", "message": "zero <gradients>", "reference": "x"}],
        "errors": [{"where": "cw@inf", "error": "ImportError: no cw"}],
    }


def test_to_jsonable_is_strict():
    out = to_jsonable({"a": math.nan, "b": (1, torch.tensor([2.0, math.inf])), "c": torch.tensor(3)})
    assert out == {"a": None, "b": [1, [2.0, None]], "c": 3}
    json.dumps(out, allow_nan=False)


def test_table_rows_and_failed_attack():
    rows = summary_rows(results())
    assert [r["what"] for r in rows] == ["clean", "pgd", "pgd", "cw", "noise Linf"]
    assert rows[1]["eps"] == "0.01 (20)" and rows[3]["note"].startswith("FAILED: ImportError")
    text = format_table(results())
    assert "FAILED" in text and "[FAIL   ] gradients" in text and "0.438" in text and "0.625" not in text
    assert rows[1]["balanced_accuracy_ci"] == "[0.300, 0.800]" and rows[1]["auc_n"] == 10
    assert rows[1]["predicted"] == "normal:9 / pneumonia:1" and "COLLAPSED" not in rows[1]["note"]
    assert rows[2]["note"].startswith("one class under attack: class normal") and "retained" in text


def test_write_report_with_examples(tmp_path):
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 8, 8, generator=g)  # RGB examples are drawn in colour
    examples = {
        "images": clean, "labels": torch.tensor([0, 1]), "clean_pred": torch.tensor([0, 1]), "class_names": None,
        "adversarial": {"pgd@0.02": {"attack": "pgd", "eps": 0.02, "lp": "inf", "images": clean + 0.02, "pred": torch.tensor([1, 1])}},
    }
    paths = write_report(results(), tmp_path, examples)
    html = paths["html"].read_text()
    assert "examples_pgd_0.02.png" in html and "zero &lt;gradients&gt;" in html  # escaped
    assert "collapsed to one class<b>" not in html and "balanced accuracy" in html
    assert paths["accuracy"].stat().st_size > 1000 and "detector" not in paths
    assert paths["balanced_accuracy"].stat().st_size > 1000 and "balanced_accuracy_vs_eps.png" in html
    assert json.loads(paths["json"].read_text())["attacks"]["cw"]["results"][0]["eps"] is None


def test_collapsed_clean_model_is_flagged_in_html(tmp_path):
    from monai_robust.report import render_html

    r = results()
    r["clean"]["collapse"] = {"collapsed": True, "balanced_enough": True, "unpredicted_classes": [0],
                              "note": "collapsed: class pneumonia predicted for 100.0% of 10 images"}
    page = render_html(r, tmp_path / "index.html").read_text()
    assert "collapsed to one class<b>" in page and 'class="fail"' in page
    assert summary_rows(r)[0]["note"].startswith("COLLAPSED: class pneumonia")
