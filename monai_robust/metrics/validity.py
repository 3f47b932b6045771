# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
"""Automatic sanity checks of a robustness evaluation, after Carlini et al., "On Evaluating Adversarial
Robustness", 2019 (https://arxiv.org/abs/1902.06705), Athalye et al., "Obfuscated Gradients Give a False Sense of
Security", ICML 2018 (https://arxiv.org/abs/1802.00420) and AutoAttack's practice (Croce & Hein, ICML 2020,
https://arxiv.org/abs/2003.01690).

The checks read the numbers of an evaluation (the ``results`` dict of
:class:`~monai_robust.engines.evaluator.RobustnessEvaluator`, also written as JSON) and the model probes of
:mod:`monai_robust.engines.probes`, and return a :class:`ValidityCheck` verdict each; :func:`run_validity_checks`
runs them all. They are pure functions of those numbers: nothing here touches a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ValidityCheck",
    "check_budget",
    "check_convergence",
    "check_gradient_masking",
    "check_gradients",
    "check_iterative_vs_single_step",
    "check_monotone_in_eps",
    "check_randomness",
    "check_reference_attacks",
    "check_unbounded",
    "run_validity_checks",
    "summarize_checks",
]

PASS, FAIL, WARN, SKIPPED = "pass", "fail", "warn", "skipped"


@dataclass
class ValidityCheck:
    """The verdict of one check.

    Args:
        name: short identifier, e.g. ``"monotone_in_eps"``.
        status: ``"pass"``, ``"fail"``, ``"warn"`` or ``"skipped"``.
        message: one or two sentences for the report: what was found and what to do.
        details: the numbers behind the verdict.
        reference: where the check comes from.

    Example::

        >>> ValidityCheck("gradients", "pass", "input gradients are finite and non-zero").status
        'pass'
    """

    name: str
    status: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record."""
        return asdict(self)


_CARLINI = "Carlini et al. 2019, https://arxiv.org/abs/1902.06705"
_ATHALYE = "Athalye et al. 2018, https://arxiv.org/abs/1802.00420"


# ---------------------------------------------------------------------------------------------------- helpers
def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _white_box(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gradient-based (white-box) points that are not reference attacks."""
    return [p for p in points if not p["reference"] and p["kind"] in ("iterative", "single-step", "minimal")]


def _points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every successful (attack, eps) point: name, kind, lp, eps, accuracy, reference flag."""
    out = []
    for name, a in results.get("attacks", {}).items():
        for r in a.get("results", []):
            if r.get("status") == "ok" and _finite(r.get("accuracy")):
                out.append(
                    {
                        "attack": name,
                        "kind": a.get("kind"),
                        "lp": a.get("lp"),
                        "eps": r.get("eps"),
                        "accuracy": r["accuracy"],
                        "reference": bool(a.get("reference")),
                        "black_box": bool(a.get("black_box")),
                        "uses_black_box": bool(a.get("uses_black_box", a.get("black_box"))),
                        "success": r.get("attack_success_rate"),
                        "n": r.get("n"),
                    }
                )
    return out


def _unbounded(eps: Any) -> bool:
    """No budget: ``inf`` in the evaluator's results, ``null`` (``None``) once written as JSON."""
    return eps is None or (isinstance(eps, float) and math.isinf(eps))


def _same_eps(a: Any, b: Any) -> bool:
    if _unbounded(a) or _unbounded(b):
        return _unbounded(a) and _unbounded(b)
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)


def _tolerance(tol: float, n: Any) -> float:
    """The allowed slack: ``tol``, but never less than one sample."""
    return max(float(tol), 1.0 / n if isinstance(n, int) and n > 0 else 0.0)


# ---------------------------------------------------------------------------------------------------- checks
def check_monotone_in_eps(results: dict[str, Any], tol: float = 0.0) -> ValidityCheck:
    """Robust accuracy must not increase with ε for any attack (a larger ball contains the smaller one).

    With the evaluator's ``reuse_smaller_eps=True`` this holds by construction and the check is skipped.

    Args:
        results: an evaluation's results.
        tol: allowed increase (fraction); at least one sample.

    Returns:
        The verdict; ``details["violations"]`` lists ``[attack, eps_small, eps_large, acc_small, acc_large]``.

    Example::

        >>> check_monotone_in_eps(results).status
        'pass'
    """
    name, ref = "monotone_in_eps", _CARLINI
    if results.get("meta", {}).get("reuse_smaller_eps"):
        return ValidityCheck(
            name,
            SKIPPED,
            "robust accuracy is non-increasing in eps by construction (reuse_smaller_eps=True: a sample fooled at a "
            "smaller eps counts as fooled at every larger one); evaluate with reuse_smaller_eps=False to test the "
            "attacks themselves.",
            reference=ref,
        )
    bad = []
    by_attack: dict[str, list[dict[str, Any]]] = {}
    for p in _points(results):
        if not _unbounded(p["eps"]):
            by_attack.setdefault(p["attack"], []).append(p)
    for attack, pts in by_attack.items():
        pts = sorted(pts, key=lambda p: p["eps"])
        for lo, hi in zip(pts, pts[1:]):
            if hi["accuracy"] > lo["accuracy"] + _tolerance(tol, hi["n"]):
                bad.append([attack, lo["eps"], hi["eps"], lo["accuracy"], hi["accuracy"]])
    if not any(len(v) > 1 for v in by_attack.values()):
        return ValidityCheck(name, SKIPPED, "no attack was run at more than one eps.", reference=ref)
    if bad:
        return ValidityCheck(
            name,
            FAIL,
            f"robust accuracy increases with eps for {sorted({b[0] for b in bad})}: the attack is not converging "
            "(too few steps, a too large or too small step size) or gradients are masked.",
            {"violations": bad},
            ref,
        )
    return ValidityCheck(name, PASS, "robust accuracy is non-increasing in eps for every attack.", reference=ref)


def check_iterative_vs_single_step(results: dict[str, Any], tol: float = 0.01) -> ValidityCheck:
    """Iterative attacks (PGD, BIM, APGD) must be at least as strong as single-step ones (FGSM) at the same ε and
    Lp: a single step that beats many suggests masked gradients or a broken step size.

    Args:
        results: an evaluation's results.
        tol: allowed excess robust accuracy of the iterative attack (fraction); at least one sample.

    Returns:
        The verdict; ``details["violations"]`` lists ``[iterative, single_step, lp, eps, acc_iter, acc_single]``.

    Example::

        >>> check_iterative_vs_single_step(results).status
        'pass'
    """
    name, ref = "iterative_vs_single_step", _CARLINI
    pts = _points(results)
    it = [p for p in pts if p["kind"] == "iterative"]
    ss = [p for p in pts if p["kind"] == "single-step"]
    pairs, bad = 0, []
    for a in it:
        for b in ss:
            if a["lp"] == b["lp"] and _same_eps(a["eps"], b["eps"]):
                pairs += 1
                if a["accuracy"] > b["accuracy"] + _tolerance(tol, a["n"]):
                    bad.append([a["attack"], b["attack"], a["lp"], a["eps"], a["accuracy"], b["accuracy"]])
    if not pairs:
        return ValidityCheck(name, SKIPPED, "no iterative and single-step attack share an eps and Lp norm.", reference=ref)
    if bad:
        return ValidityCheck(
            name,
            FAIL,
            "a single-step attack is stronger than an iterative one at the same eps: raise the number of steps, "
            "check the step size, or suspect gradient masking.",
            {"violations": bad, "pairs": pairs},
            ref,
        )
    return ValidityCheck(
        name, PASS, f"iterative attacks are at least as strong as single-step ones ({pairs} pairs).", {"pairs": pairs}, ref
    )


def check_reference_attacks(results: dict[str, Any], tol: float = 0.01) -> ValidityCheck:
    """A white-box gradient attack must not be beaten by random noise of the same norm, by a gradient-free attack or
    by a transfer attack (the evaluator's noise controls and the attacks marked as references).

    Args:
        results: an evaluation's results (``controls["noise"]`` and attacks with ``reference=True``).
        tol: allowed excess robust accuracy of the white-box attack (fraction); at least one sample.

    Returns:
        The verdict; ``details["violations"]`` lists ``[white_box, reference, lp, eps, acc_white, acc_reference]``.

    Example::

        >>> check_reference_attacks(results).status
        'pass'
    """
    name, ref = "reference_attacks", _CARLINI
    pts = _points(results)
    refs = [p for p in pts if p["reference"]]
    for c in results.get("controls", {}).get("noise", []):
        if _finite(c.get("accuracy")):
            refs.append({"attack": f"noise(L{c['lp']})", "lp": c["lp"], "eps": c["eps"], "accuracy": c["accuracy"]})
    white = _white_box(pts)
    pairs, bad = 0, []
    for w in white:
        for r in refs:
            if w["lp"] == r["lp"] and _same_eps(w["eps"], r["eps"]):
                pairs += 1
                if w["accuracy"] > r["accuracy"] + _tolerance(tol, w["n"]):
                    bad.append([w["attack"], r["attack"], w["lp"], w["eps"], w["accuracy"], r["accuracy"]])
    if not pairs:
        return ValidityCheck(name, SKIPPED, "no noise control or reference attack shares an eps with a white-box one.", reference=ref)
    if bad:
        return ValidityCheck(
            name,
            FAIL,
            "random noise or a gradient-free/transfer attack beats a white-box attack at the same budget: the "
            "gradients are probably masked or obfuscated (try BPDA/EOT, a margin loss, more steps).",
            {"violations": bad, "pairs": pairs},
            ref,
        )
    return ValidityCheck(
        name, PASS, f"no noise control or reference attack beats a white-box attack ({pairs} pairs).", {"pairs": pairs}, ref
    )


def check_gradient_masking(results: dict[str, Any], tol: float = 0.01) -> ValidityCheck:
    """A black-box attack (``attack.black_box``, e.g. Square) must not be stronger than *every* white-box attack of
    the same Lp at the same ε: gradients that point nowhere (quantisation, thresholds, shattered or saturated
    operations) leave white-box attacks stranded while a query-based attack, blind to them, still succeeds.

    An attack that holds a black-box part (``uses_black_box``: AutoAttack with Square) is not counted as white box:
    its per-sample worst case includes the black-box attack, so it can never lose to it and would silence the check.

    Args:
        results: an evaluation's results (attacks with ``black_box=True``).
        tol: margin (fraction of samples, at least one sample) by which the black-box robust accuracy must be
            lower than the best white-box one to count.

    Returns:
        ``"fail"`` with "gradient masking suspected"; ``details["violations"]`` lists ``[black_box, lp, eps,
        acc_black_box, best_white_box, acc_white_box]``.

    Example::

        >>> check_gradient_masking(results).status
        'pass'
    """
    name, ref = "gradient_masking", _ATHALYE
    pts = _points(results)
    black = [p for p in pts if p["black_box"]]
    white = [p for p in _white_box(pts) if not p["uses_black_box"]]
    pairs, bad = 0, []
    for b in black:
        same = [w for w in white if w["lp"] == b["lp"] and _same_eps(w["eps"], b["eps"])]
        if not same:
            continue
        pairs += 1
        best = min(same, key=lambda w: w["accuracy"])
        if b["accuracy"] < best["accuracy"] - _tolerance(tol, b["n"]):
            bad.append([b["attack"], b["lp"], b["eps"], b["accuracy"], best["attack"], best["accuracy"]])
    if not pairs:
        return ValidityCheck(name, SKIPPED, "no black-box attack shares an Lp norm and eps with a white-box one.", reference=ref)
    if bad:
        return ValidityCheck(
            name,
            FAIL,
            f"gradient masking suspected: the black-box attack {sorted({v[0] for v in bad})} is stronger than every "
            "white-box attack at the same budget; the white-box robust accuracies are not trustworthy (attack "
            "through straight-through gradients / BPDA, or report the black-box numbers).",
            {"violations": bad, "pairs": pairs},
            ref,
        )
    return ValidityCheck(
        name, PASS, f"no black-box attack beats every white-box attack at its budget ({pairs} comparisons).", {"pairs": pairs}, ref
    )


def check_convergence(results: dict[str, Any], max_success: float = 0.01, min_other: float = 0.5) -> ValidityCheck:
    """An attack that (almost) never succeeds where another attack of the same Lp breaks most samples with at most
    the same budget has not converged: its settings (steps, step size, constants of CW's search) are wrong for
    this model or data.

    The comparison is with a budget *at most* that of the failing attack (a larger budget breaking more is the
    normal shape of an ε curve); an unbounded minimisation attack (CW, DeepFool at ``eps=inf``) counts as having
    the largest budget. The per-step success of CW and DeepFool (``success_by_step``) is in the details.

    Args:
        results: an evaluation's results (``attack_success_rate`` per attack and ε).
        max_success: success rate at or below which an attack counts as failing (1 %).
        min_other: success rate above which the other attack counts as breaking most samples (50 %).

    Returns:
        ``"fail"`` with "attack failed to converge"; ``details["violations"]`` lists ``[attack, lp, eps, success,
        other, other_eps, other_success]``.

    Example::

        >>> check_convergence(results).status
        'pass'
    """
    name, ref = "attack_convergence", _CARLINI
    pts = [p for p in _points(results) if _finite(p["success"])]
    bad = []
    for a in pts:
        if a["success"] > max_success:
            continue
        for b in pts:
            if b["attack"] == a["attack"] or b["lp"] != a["lp"] or b["success"] <= min_other or _unbounded(b["eps"]):
                continue
            if _unbounded(a["eps"]) or b["eps"] <= a["eps"] * (1 + 1e-6):
                bad.append([a["attack"], a["lp"], a["eps"], a["success"], b["attack"], b["eps"], b["success"]])
                break
    if not pts:
        return ValidityCheck(name, SKIPPED, "no attack success rate to compare.", reference=ref)
    progress = {k: a["success_by_step"] for k, a in results.get("attacks", {}).items() if a.get("success_by_step")}
    if bad:
        settings = {v[0]: results["attacks"][v[0]].get("attack") for v in bad}
        return ValidityCheck(
            name,
            FAIL,
            f"attack failed to converge: settings of {sorted(settings)}: at most {max_success:.0%} success where "
            f"another attack of the same norm breaks over {min_other:.0%} with no larger budget; raise the steps or "
            "the search's constants (CW: initial_const, binary_search_steps) and check the step size.",
            {"violations": bad, "settings": settings, "success_by_step": progress},
            ref,
        )
    return ValidityCheck(
        name, PASS, "no attack fails where another of the same norm succeeds with no larger budget.",
        {"success_by_step": progress}, ref,
    )


def check_budget(results: dict[str, Any], rtol: float = 1e-4) -> ValidityCheck:
    """Every adversarial example respects its budget ``||δ||_p <= eps`` and the bounds of the data.

    Args:
        results: an evaluation's results (``max_norm`` and ``out_of_bounds`` per attack and eps).
        rtol: relative slack on the budget for floating-point error.

    Returns:
        The verdict; ``details["violations"]`` lists ``[attack, eps, max_norm, out_of_bounds]``.

    Example::

        >>> check_budget(results).status
        'pass'
    """
    name = "budget_and_bounds"
    bad, seen = [], 0
    for attack, a in results.get("attacks", {}).items():
        for r in a.get("results", []):
            if r.get("status") != "ok":
                continue
            seen += 1
            eps, mx, oob = r.get("eps"), r.get("max_norm"), r.get("out_of_bounds", 0)
            over = _finite(eps) and _finite(mx) and mx > eps * (1 + rtol) + 1e-7
            if over or (oob or 0) > 0:
                bad.append([attack, eps, mx, oob])
    if not seen:
        return ValidityCheck(name, SKIPPED, "no attack result to check.")
    if bad:
        return ValidityCheck(
            name, FAIL, "some adversarial examples exceed their eps budget or leave the data bounds.", {"violations": bad}
        )
    return ValidityCheck(name, PASS, "every adversarial example is within its eps budget and the data bounds.")


def check_unbounded(results: dict[str, Any], probes: dict[str, Any], max_accuracy: float = 0.05) -> ValidityCheck:
    """An attack with an unbounded (or very large) budget must drive accuracy to about 0; otherwise the attack or
    the gradients are broken.

    Reads ``probes["unbounded"]`` (``{attack: {"eps", "accuracy", "n"}}``: iterative attacks re-run at growing
    budgets up to the whole data range, ``accuracy`` the lowest reached) and the ``eps=None`` results of
    minimal-perturbation attacks (CW, DeepFool).

    Args:
        results: an evaluation's results.
        probes: the evaluator's probe results.
        max_accuracy: largest accuracy accepted as "about 0".

    Returns:
        The verdict; ``details`` maps each attack to its accuracy at the unbounded budget.

    Example::

        >>> check_unbounded(results, probes).status
        'pass'
    """
    name = "unbounded_eps"
    found = {k: dict(v) for k, v in probes.get("unbounded", {}).items()}
    for attack, a in results.get("attacks", {}).items():
        for r in a.get("results", []):
            if r.get("status") == "ok" and _unbounded(r.get("eps")) and _finite(r.get("accuracy")):
                found[attack] = {"eps": None, "accuracy": r["accuracy"], "n": r.get("n")}
    if not found:
        return ValidityCheck(
            name, SKIPPED, "no iterative attack factory nor unbounded attack to run at a very large eps.", reference=_CARLINI
        )
    bad = {k: v for k, v in found.items() if "error" in v or not (_finite(v.get("accuracy")) and v["accuracy"] <= max_accuracy)}
    if bad:
        return ValidityCheck(
            name,
            FAIL,
            f"with an unbounded budget accuracy stays above {max_accuracy:g} for {sorted(bad)}: the attack cannot "
            "reach the decision boundary (broken attack, masked or zero gradients, too few steps).",
            found,
            _CARLINI,
        )
    return ValidityCheck(name, PASS, f"an unbounded budget drives accuracy to <= {max_accuracy:g}.", found, _CARLINI)


def check_gradients(probes: dict[str, Any], max_zero_fraction: float = 0.5) -> ValidityCheck:
    """Input gradients must be finite and non-zero (:func:`~monai_robust.engines.probes.gradient_probe`).

    Args:
        probes: the evaluator's probes; reads ``probes["gradients"]``.
        max_zero_fraction: fail above this fraction of samples with an all-zero margin gradient; a smaller non-zero
            fraction (or saturated-softmax zeros) is a warning.

    Returns:
        The verdict with the probe's numbers.

    Example::

        >>> check_gradients({"gradients": gradient_probe(net, images, labels)}).status
        'pass'
    """
    name, g = "gradients", probes.get("gradients")
    if not g:
        return ValidityCheck(name, SKIPPED, "no gradient probe was run.", reference=_ATHALYE)
    if "error" in g:
        return ValidityCheck(name, FAIL, f"input gradients could not be computed: {g['error']}", g, _ATHALYE)
    if g["nonfinite_fraction"] > 0:
        return ValidityCheck(
            name, FAIL, f"{g['nonfinite_fraction']:.0%} of samples have NaN/Inf input gradients.", g, _ATHALYE
        )
    if g["zero_margin_fraction"] > max_zero_fraction:
        return ValidityCheck(
            name,
            FAIL,
            f"{g['zero_margin_fraction']:.0%} of samples have an all-zero input gradient: a non-differentiable "
            "operation masks the gradients; gradient attacks are meaningless here (use BPDA or gradient-free attacks).",
            g,
            _ATHALYE,
        )
    if g["zero_margin_fraction"] > 0 or g["zero_loss_fraction"] > 0:
        return ValidityCheck(
            name,
            WARN,
            f"{g['zero_margin_fraction']:.0%} of samples have a zero margin gradient and {g['zero_loss_fraction']:.0%} "
            "a zero loss gradient (saturated softmax): add a margin-loss attack (CW, DLR).",
            g,
            _ATHALYE,
        )
    return ValidityCheck(name, PASS, "input gradients are finite and non-zero for every probed sample.", g, _ATHALYE)


def check_randomness(probes: dict[str, Any]) -> ValidityCheck:
    """A model whose eval-mode outputs differ between two passes is randomised: gradient attacks must then use
    Expectation over Transformation (EOT) or their robust accuracy is overstated.

    Args:
        probes: the evaluator's probes; reads ``probes["randomness"]``.

    Returns:
        ``"fail"`` for a randomised model (with the EOT advice), else ``"pass"``.

    Example::

        >>> check_randomness({"randomness": randomness_probe(net, images)}).status
        'pass'
    """
    name, r = "randomized_model", probes.get("randomness")
    if not r:
        return ValidityCheck(name, SKIPPED, "no randomness probe was run.", reference=_ATHALYE)
    if "error" in r:
        return ValidityCheck(name, FAIL, f"the randomness probe failed: {r['error']}", r, _ATHALYE)
    if r["randomized"]:
        return ValidityCheck(
            name,
            FAIL,
            f"two forward passes in eval mode differ (max |diff| = {r['max_abs_difference']:.3g}): the model is "
            "randomised; attack it with Expectation over Transformation (EOT: average gradients over many passes) before "
            "trusting these robust accuracies.",
            r,
            _ATHALYE,
        )
    return ValidityCheck(name, PASS, "the model is deterministic in eval mode.", r, _ATHALYE)


def run_validity_checks(
    results: dict[str, Any], probes: dict[str, Any] | None = None, tol: float = 0.01, max_accuracy: float = 0.05
) -> list[ValidityCheck]:
    """Runs every check on an evaluation's results and probes.

    Args:
        results: an evaluation's results.
        probes: ``{"gradients", "randomness", "unbounded"}`` from the evaluator (missing ones are skipped).
        tol: tolerance of the comparisons between attacks (fraction of samples).
        max_accuracy: accuracy accepted as "about 0" at an unbounded budget.

    Returns:
        The verdicts, in a fixed order.

    Example::

        >>> [c.status for c in run_validity_checks(results, probes)]
    """
    probes = probes or {}
    return [
        check_monotone_in_eps(results, 0.0),
        check_iterative_vs_single_step(results, tol),
        check_reference_attacks(results, tol),
        check_gradient_masking(results, tol),
        check_convergence(results),
        check_unbounded(results, probes, max_accuracy),
        check_gradients(probes),
        check_randomness(probes),
        check_budget(results),
    ]


def summarize_checks(checks: Sequence[ValidityCheck]) -> dict[str, int]:
    """Counts of each status among ``checks``.

    Example::

        >>> summarize_checks([ValidityCheck("a", "pass", ""), ValidityCheck("b", "fail", "")])
        {'pass': 1, 'fail': 1, 'warn': 0, 'skipped': 0}
    """
    out = {PASS: 0, FAIL: 0, WARN: 0, SKIPPED: 0}
    for c in checks:
        out[c.status] = out.get(c.status, 0) + 1
    return out
