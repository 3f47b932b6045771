# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
from __future__ import annotations

import math

import pytest

from monai_robust.metrics.validity import (
    check_budget,
    check_convergence,
    check_gradient_masking,
    check_iterative_vs_single_step,
    check_monotone_in_eps,
    check_reference_attacks,
    check_unbounded,
    run_validity_checks,
    summarize_checks,
)


def results(pgd=(0.6, 0.3, 0.1), fgsm=(0.7, 0.5, 0.4), noise=(0.9, 0.9, 0.8), reuse=False, max_norm=None, oob=0):
    eps = [0.01, 0.02, 0.04]

    def rows(accs, kind):
        return [
            {"eps": e, "status": "ok", "accuracy": a, "n": 100, "max_norm": e if max_norm is None else max_norm, "out_of_bounds": oob}
            for e, a in zip(eps, accs)
        ]

    return {
        "meta": {"reuse_smaller_eps": reuse},
        "attacks": {
            "pgd": {"kind": "iterative", "lp": "inf", "reference": False, "results": rows(pgd, "iterative")},
            "fgsm": {"kind": "single-step", "lp": "inf", "reference": False, "results": rows(fgsm, "single-step")},
        },
        "controls": {"noise": [{"lp": "inf", "eps": e, "accuracy": a} for e, a in zip(eps, noise)]},
    }


def test_healthy_results_pass():
    r = results()
    assert check_monotone_in_eps(r).status == "pass"
    assert check_iterative_vs_single_step(r).status == "pass"
    assert check_reference_attacks(r).status == "pass"
    assert check_budget(r).status == "pass"
    assert check_monotone_in_eps(results(reuse=True)).status == "skipped"


@pytest.mark.parametrize(
    "check, r",
    [
        (check_monotone_in_eps, results(pgd=(0.3, 0.6, 0.1))),
        (check_iterative_vs_single_step, results(pgd=(0.8, 0.6, 0.5))),
        (check_reference_attacks, results(pgd=(0.95, 0.3, 0.1))),
        (check_budget, results(max_norm=0.05)),
        (check_budget, results(oob=2)),
    ],
)
def test_bad_results_fail(check, r):
    verdict = check(r)
    assert verdict.status == "fail" and verdict.details["violations"]


def test_one_sample_tolerance():
    # 0.61 vs 0.60 with n=100 is one sample: not a violation
    assert check_monotone_in_eps(results(pgd=(0.60, 0.61, 0.1))).status == "pass"


def test_unbounded():
    r = results()
    assert check_unbounded(r, {"unbounded": {"pgd": {"eps": 1.0, "accuracy": 0.0, "n": 32}}}).status == "pass"
    assert check_unbounded(r, {"unbounded": {"pgd": {"eps": 1.0, "accuracy": 0.4, "n": 32}}}).status == "fail"
    assert check_unbounded(r, {}).status == "skipped"
    r["attacks"]["cw"] = {"kind": "minimal", "lp": "2", "results": [{"eps": None, "status": "ok", "accuracy": 0.3}]}
    assert check_unbounded(r, {}).status == "fail"


def test_run_all_and_summary():
    checks = run_validity_checks(results(), {})
    assert [c.name for c in checks][:3] == ["monotone_in_eps", "iterative_vs_single_step", "reference_attacks"]
    counts = summarize_checks(checks)
    assert sum(counts.values()) == len(checks) and counts["skipped"] == 5  # no probes, black-box or success rates
    assert all(isinstance(c.to_dict()["message"], str) for c in checks)


def _entry(accs, success, kind="iterative", black_box=False, lp="inf", eps=(0.01, 0.02, 0.04), **extra):
    rows = [
        {"eps": e, "status": "ok", "accuracy": a, "attack_success_rate": s, "n": 100}
        for e, a, s in zip(eps, accs, success)
    ]
    return {"kind": kind, "lp": lp, "reference": black_box, "black_box": black_box, "results": rows, **extra}


def test_gradient_masking_check():
    white = _entry((0.8, 0.7, 0.6), (0.1, 0.2, 0.3))
    quiet = {"attacks": {"pgd": white, "square": _entry((0.85, 0.75, 0.6), (0.05, 0.15, 0.3), "black-box", True)}}
    assert check_gradient_masking(quiet).status == "pass"
    masked = {"attacks": {"pgd": white, "square": _entry((0.5, 0.3, 0.2), (0.4, 0.6, 0.7), "black-box", True)}}
    verdict = check_gradient_masking(masked)
    assert verdict.status == "fail" and "gradient masking suspected" in verdict.message
    assert [v[2] for v in verdict.details["violations"]] == [0.01, 0.02, 0.04]
    # stronger than one white-box attack but not than every one: quiet
    both = dict(masked["attacks"], apgd=_entry((0.4, 0.2, 0.1), (0.5, 0.7, 0.8)))
    assert check_gradient_masking({"attacks": both}).status == "pass"
    assert check_gradient_masking({"attacks": {"pgd": white}}).status == "skipped"



def test_gradient_masking_check_ignores_ensembles_holding_the_black_box_attack():
    """AutoAttack's worst case includes its Square, so it is never weaker than Square: counted as white box it
    would silence the check on every masked model evaluated with it."""
    white = _entry((0.8, 0.7, 0.6), (0.1, 0.2, 0.3))
    square = _entry((0.5, 0.3, 0.2), (0.4, 0.6, 0.7), "black-box", True)
    ensemble = _entry((0.5, 0.3, 0.2), (0.4, 0.6, 0.7), uses_black_box=True)
    verdict = check_gradient_masking({"attacks": {"pgd": white, "square": square, "autoattack": ensemble}})
    assert verdict.status == "fail" and {v[4] for v in verdict.details["violations"]} == {"pgd"}
    assert check_gradient_masking({"attacks": {"square": square, "autoattack": ensemble}}).status == "skipped"


def test_convergence_check():
    pgd = _entry((0.3, 0.2, 0.1), (0.6, 0.7, 0.9), lp=2, eps=(0.5, 1.0, 2.0))
    cw_ok = _entry((0.2, 0.1, 0.0), (0.7, 0.8, 1.0), "minimal", lp=2, eps=(0.5, 1.0, math.inf), success_by_step=[0.5, 1.0])
    assert check_convergence({"attacks": {"pgd": pgd, "cw": cw_ok}}).status == "pass"
    cw_stuck = _entry((0.9, 0.9, 0.9), (0.0, 0.0, 0.0), "minimal", lp=2, eps=(0.5, 1.0, math.inf), success_by_step=[0.0])
    verdict = check_convergence({"attacks": {"pgd": pgd, "cw": cw_stuck}})
    assert verdict.status == "fail" and "attack failed to converge" in verdict.message
    assert verdict.details["success_by_step"] == {"cw": [0.0]}
    # a larger budget breaking more is the normal eps curve, and other norms are not compared
    weak_small = _entry((0.99,), (0.005,), lp=2, eps=(0.1,))
    assert check_convergence({"attacks": {"pgd": pgd, "fgm": weak_small}}).status == "pass"
    linf = _entry((0.9, 0.9, 0.9), (0.0, 0.0, 0.0), lp="inf", eps=(4.0, 8.0, 16.0))
    assert check_convergence({"attacks": {"pgd": pgd, "fgsm": linf}}).status == "pass"
