# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

from monai_robust.report import format_table, render_html
from monai_robust.report.verdicts import (
    budget_verdicts,
    headline_lines,
    key_verdicts,
    standard_suite_rows,
    success_by_step_rows,
)

REDUCED = {"attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "num_steps": 10, "num_queries": 100,
           "num_target_classes": 9, "standard": False, "reduced": ["num_steps 10 < 100", "num_queries 100 < 5000"],
           "standard_budget": {"attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "num_steps": 100,
                               "num_queries": 5000, "num_target_classes": 9}}


def results(with_suite=True, budget=REDUCED):
    row = {"eps": 0.01, "status": "ok", "n": 20, "accuracy": 0.45, "attack_success_rate": 0.4}
    attacks = {
        "pgd": {"lp": "inf", "kind": "iterative", "results": [dict(row, accuracy=0.6)]},
        "cw": {"lp": "2", "kind": "minimal", "results": [dict(row, eps=None, accuracy=0.0)],
               "success_by_step": [0.25, 0.5, 0.875]},
    }
    if with_suite:
        attacks["autoattack"] = {"lp": "inf", "kind": "iterative", "standard_suite": True, "uses_black_box": True,
                                 "results": [row], **({"budget": budget} if budget else {})}
    validity = [
        {"name": "gradients", "status": "pass", "message": "finite"},
        {"name": "attack_convergence", "status": "pass", "message": "converged <ok>"},
        {"name": "gradient_masking", "status": "fail", "message": "gradient masking suspected: square"},
    ]
    return {"meta": {"n": 20}, "clean": {"n": 20, "accuracy": 0.9}, "attacks": attacks, "validity": validity}


def test_headline_names_standard_suite_verdicts_and_steps():
    r = results()
    assert [x["attack"] for x in standard_suite_rows(r)] == ["autoattack"]
    assert [c["name"] for c in key_verdicts(r)] == ["gradient_masking", "attack_convergence"]  # fixed order
    assert success_by_step_rows(r) == [("cw", [0.25, 0.5, 0.875])]
    lines = headline_lines(r)
    assert "AutoAttack" in lines[0] and "acc 0.450 (n=20)" in lines[0]
    assert lines[1].startswith("autoattack budget: 10 iterations, 9 target classes, 100 Square queries")
    assert "REDUCED (standard 100 iterations, 9 target classes, 5000 Square queries" in lines[1]
    assert lines[2].startswith("[FAIL] gradient_masking") and "0.875" in lines[-1]
    assert "not run" in headline_lines(results(with_suite=False))[0]


def test_headline_says_standard_or_unrecorded_budget():
    standard = dict(REDUCED, num_steps=100, num_queries=5000, standard=True, reduced=[])
    (v,) = budget_verdicts(results(budget=standard))
    assert v["standard"] is True and "standard version's" in v["text"] and "REDUCED" not in v["text"]
    (v,) = budget_verdicts(results(budget=None))  # a JSON written before budgets were recorded
    assert v["standard"] is None and "not recorded" in headline_lines(results(budget=None))[1]


def test_table_and_html_put_the_headline_first(tmp_path):
    text = format_table(results())
    assert text.index("gradient_masking") < text.index("attack  ")  # above the numbers
    page = render_html(results(), tmp_path / "index.html").read_text()
    head = page.index("Headline")
    assert head < page.index("All numbers") and page.index("gradient masking suspected", head) < page.index("All numbers")
    assert "converged &lt;ok&gt;" in page and "<td>0.875</td>" in page and "Standard suite: <b>AutoAttack</b>" in page
    assert "was not run" in render_html(results(False), tmp_path / "b.html").read_text()
    assert "REDUCED" in text.split("attack  ")[0] and "REDUCED (standard 100 iterations" in page[head:page.index("All numbers")]
