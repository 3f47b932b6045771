#!/usr/bin/env bash
# Copyright (c) monai_robust contributors
# Licensed under the Apache License, Version 2.0 (the "License");
#
# The GPU benchmarks in one prepared run (issue 19): at most BUDGET_S seconds (default 460, under 8 minutes on one
# H100), from a checkout of this repository on a machine with a CUDA build of torch:
#
#   1. installs what is missing of the project's dependencies (pyproject.toml; never torch itself; offline from
#      WHEELHOUSE=/path/to/wheels when set), torchattacks 3.5.1 without its dependencies;
#   2. attacks: bench/attacks.py in fp32, under AMP fp16 and bf16, and channels-last with fp16 / bf16 (ours and
#      torchattacks; ART in fp32);
#   3. the evaluator vs a torchattacks loop: bench/evaluation.py;
#   4. UAP fitting vs ART: bench/universal.py (the FGSM-inner cases; DEEPFOOL_PASSES=1 adds ART's default case);
#   5. the 2D bundle chain (train -> guard -> evaluate, train -> harden -> guard -> evaluate) on the device:
#      bench/bundles.py;
#   6. the evaluator vs torchattacks on MONAI DenseNet121-2D (64^2, 512 test images) with the AutoAttack rows and
#      the evaluator in mixed precision: bench/evaluation.py --network densenet2d (last: it gets what is left);
#   7. bench/gpu_table.py: summary.md and summary.json.
#
# Every step writes its JSON into OUT (the environment variable; default bench/results/gpu) and steps.json records
# each step's status and seconds; a step that runs out of its share of the budget is stopped and marked "timeout".
# Settings (environment): DEVICE (cuda), OUT, BUDGET_S, SCALE (multiplies each step's share), PYTHON (python3),
# DATA_DIR (PneumoniaMNIST for steps 3-4; default shared/data in or beside the checkout, else they are skipped),
# DEEPFOOL_PASSES, WHEELHOUSE, SMOKE=1 (tiny sizes).
#
# Usage:
#   bash bench/gpu.sh                                # on the GPU machine
#   OUT=/tmp/gpu BUDGET_S=420 DATA_DIR=/path/to/folder/with/pneumoniamnist.npz bash bench/gpu.sh
#   DEVICE=cpu SMOKE=1 OUT=/tmp/gpu_smoke bash bench/gpu.sh   # CPU dry run at tiny sizes (a test of the script)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEVICE="${DEVICE:-cuda}"
SMOKE="${SMOKE:-0}"
OUT_DIR="${OUT:-$ROOT/bench/results/gpu}"
PY="${PYTHON:-python3}"
# PneumoniaMNIST for the evaluation and UAP steps: DATA_DIR, else shared/data in or beside the checkout
DATA="${DATA_DIR:-}"
for d in "$ROOT/shared/data" "$ROOT/../shared/data"; do [[ -z "$DATA" && -f "$d/pneumoniamnist.npz" ]] && DATA="$d"; done
DEEPFOOL_PASSES="${DEEPFOOL_PASSES:-0}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the package from this checkout, no install needed
mkdir -p "$OUT_DIR"
START=$(date +%s)
STEPS="$OUT_DIR/steps.tsv"
: > "$STEPS"

remaining() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# step NAME SHARE_S CMD...: runs CMD with at most min(SHARE_S, what is left of the budget) seconds
step() {
  local name="$1" share="$2"; shift 2
  local left; left=$(remaining)
  share=$(( share * SCALE ))
  local limit=$(( share < left ? share : left ))
  if (( limit < 5 )); then
    printf '%s\tskipped (budget spent)\t0\n' "$name" >> "$STEPS"; echo "== $name: skipped, budget spent"; return
  fi
  echo "== $name (at most ${limit}s): $*"
  local t0; t0=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  local status="ok"; (( rc == 124 || rc == 137 )) && status="timeout"; (( rc != 0 && rc != 124 && rc != 137 )) && status="failed (rc $rc)"
  printf '%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" >> "$STEPS"
  echo "   $status; log: $OUT_DIR/$name.log"; tail -n 3 "$OUT_DIR/$name.log" | sed 's/^/   | /'
}

if [[ "$DEVICE" == cuda* ]]; then
  PRECISIONS=(fp16 bf16)
else
  PRECISIONS=(bf16)  # CPU autocast: bf16 (AVX512-BF16 / AMX where the CPU has them)
fi
if [[ "$SMOKE" == "1" ]]; then
  ATTACK_SIZE=(--models resnet18_2d --attacks FGSM PGD-10-Linf --quick --batch-div 8 --threads 1)
  EVAL_SIZE=(--n-test 32 --batch-size 16 --epochs 1 --repeats 1)
  EVAL_DN_SIZE=(--n-train 32 --n-test 16 --batch-size 8 --epochs 1 --aa-steps 2 --aa-queries 5)
  UAP_SIZE=(--num-fit 32 --passes 1 --repeats 1)
  BUNDLE_SIZE=(--tiny --threads 1)
  SCALE="${SCALE:-6}"  # a slow (shared) CPU needs more than a GPU's shares
  BUDGET_S="${BUDGET_S:-2400}"
  GRAD_ATTACKS=(--attacks FGSM PGD-10-Linf)
else
  ATTACK_SIZE=(--repeats 2)
  EVAL_SIZE=(--repeats 2)
  EVAL_DN_SIZE=(--n-test 512 --epochs 4 --aa-steps 10 --aa-queries 100)
  UAP_SIZE=(--repeats 2)
  BUNDLE_SIZE=(--threads 4)
  GRAD_ATTACKS=(--attacks FGSM BIM-10 PGD-10-Linf PGD-10-L2 APGD-10-Linf CW-10)
fi
BUDGET_S="${BUDGET_S:-460}"  # seconds for the whole run
SCALE="${SCALE:-1}"  # multiplies every step's share of the budget

step install 60 "$PY" bench/install_deps.py
step attacks_fp32 90 "$PY" bench/attacks.py --device "$DEVICE" "${ATTACK_SIZE[@]}" --out "$OUT_DIR/attacks_fp32.json" --no-readme
for p in "${PRECISIONS[@]}"; do
  step "attacks_$p" 35 "$PY" bench/attacks.py --device "$DEVICE" --precision "$p" --libs ours torchattacks \
    "${ATTACK_SIZE[@]}" "${GRAD_ATTACKS[@]}" --out "$OUT_DIR/attacks_$p.json" --no-readme
done
step "attacks_channels_last_${PRECISIONS[0]}" 35 "$PY" bench/attacks.py --device "$DEVICE" --precision "${PRECISIONS[0]}" \
  --channels-last --libs ours torchattacks "${ATTACK_SIZE[@]}" "${GRAD_ATTACKS[@]}" \
  --out "$OUT_DIR/attacks_channels_last_${PRECISIONS[0]}.json" --no-readme
HAVE_DATA=0; [[ -n "$DATA" && -f "$DATA/pneumoniamnist.npz" ]] && HAVE_DATA=1
no_data() { echo "== no pneumoniamnist.npz (set DATA_DIR): $* skipped"; for n in "$@"; do printf '%s\tskipped (no data: set DATA_DIR)\t0\n' "$n" >> "$STEPS"; done; }
if (( ! HAVE_DATA )); then
  no_data evaluation universal
else
step evaluation 50 "$PY" bench/evaluation.py --device "$DEVICE" --data "$DATA/pneumoniamnist.npz" "${EVAL_SIZE[@]}" \
  --out "$OUT_DIR/evaluation.json" --no-readme
step universal 50 "$PY" bench/universal.py --device "$DEVICE" --data-dir "$DATA" "${UAP_SIZE[@]}" \
  --deepfool-passes "$DEEPFOOL_PASSES" --out "$OUT_DIR/universal.json" --readme "$OUT_DIR/universal_README.md"
fi
step bundles 100 "$PY" bench/bundles.py --bundles robust_xray_classification --device "$DEVICE" \
  "${BUNDLE_SIZE[@]}" --work "$OUT_DIR/bundle_roots" --out "$OUT_DIR/bundles.json" --no-readme
if (( ! HAVE_DATA )); then
  no_data evaluation_densenet2d
else
  step evaluation_densenet2d 120 "$PY" bench/evaluation.py --device "$DEVICE" --network densenet2d \
    --data "$DATA/pneumoniamnist.npz" "${EVAL_DN_SIZE[@]}" --eps-sets 1 --repeats 1 --amp --no-own-loop --no-cw-check \
    --out "$OUT_DIR/evaluation_densenet2d.json" --no-readme
fi

"$PY" - "$STEPS" "$OUT_DIR/steps.json" <<'PYEOF'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
json.dump([{"step": s, "status": st, "seconds": float(t)} for s, st, t in rows], open(sys.argv[2], "w"), indent=2)
PYEOF
"$PY" bench/gpu_table.py "$OUT_DIR"
echo "total $(( $(date +%s) - START )) s; results in $OUT_DIR (summary.md)"
