#!/usr/bin/env bash
# The converged accuracy matrix in priority order (resumable: rerun it after a stop and it goes on where it was).
#   bash benchmarks/accuracy/run_matrix.sh      (from the repository root; about 30 hours on 2 cores with native bfloat16)
#   NO_START_AFTER='2026-12-06 21:45' bash benchmarks/accuracy/run_matrix.sh   (no run starts after that UTC time)
# Stop it with `pkill -f run_matrix.sh; pkill -f benchmarks/accuracy/run.py` (the runner ends its workers on SIGTERM);
# a stopped run resumes from its last epoch's checkpoint.
# 1. At imbalance 100, then 50: the cells of the CDB/beta acceptance (CE, the stable CDB, tune-beta and its per-class
#    betas, the paper's CDB, the paper's class-balanced grid and the softmax with PyTorch's reduction), the likeliest
#    best class-balanced configurations first, so a session cut short leaves the most informative cells done.
#    Beta 0.9 comes after both imbalances: with these counts (59 to 5975 a class at imbalance 100) its weights are
#    uniform to 0.2 % (1 / (1 - beta) = 10 is below the smallest count), so those cells are the unweighted losses
#    and cannot be the best class-balanced configuration. The softmax forms' were run at 100 and 50 before the rule
#    that now leaves such cells out (matrix.omitted: weights uniform to 0.5 %; at imbalance 10 beta 0.9 and 0.99 of
#    every form), and check it; run.py skips the left-out cells and says which.
# 2. Everything else of the matrix, imbalance 100, 50, 200, then 10.
# 3. Seeds 3 and 4 for the headline rows (CE and each family's best cell by validation) at every imbalance.
# Imbalance 200 trains in float32 on every machine (matrix.AMP_BY_IMBALANCE: its first runs trained on a CPU without
# native bfloat16). A step whose runs would mix precisions within another imbalance (a machine without native
# bfloat16 trains amp="auto" in float32) is refused by run.py with exit status 3 and skipped here; any other failure
# stops the script.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
step() {
  local rc=0
  "$PY" benchmarks/accuracy/run.py ${NO_START_AFTER:+--no-start-after "$NO_START_AFTER"} "$@" || rc=$?
  if [ "$rc" -eq 3 ]; then echo "run_matrix.sh: skipped (another precision): $*"; elif [ "$rc" -ne 0 ]; then exit "$rc"; fi
}
FIRST=ce,cdb_stable,tune_beta,cb_softmax_per_class_beta
ACCEPTANCE=ce,cb_softmax_b0.9999,cdb_tau1.5,cdb_dynamic,cb_softmax_wm_b0.9999,cb_softmax_b0.999,cb_sigmoid_b0.9999,\
cb_focal_b0.9999_g1,cb_focal_b0.9999_g0.5,cb_focal_b0.9999_g2,cb_softmax_wm_b0.999,cb_sigmoid_b0.999,\
cb_focal_b0.999_g1,cb_focal_b0.999_g0.5,cb_focal_b0.999_g2,cdb_stable_wm,cb_softmax_b0.99,cb_sigmoid_b0.99,\
cb_focal_b0.99_g0.5,cb_focal_b0.99_g1,cb_focal_b0.99_g2,cb_softmax_wm_b0.99,cdb_stable_focal
NEAR_UNIFORM=cb_softmax_b0.9,cb_sigmoid_b0.9,cb_focal_b0.9_g0.5,cb_focal_b0.9_g1,cb_focal_b0.9_g2,cb_softmax_wm_b0.9
for rho in 100 50; do
  step --imbalances "$rho" --in-order --only "$FIRST"
  step --imbalances "$rho" --in-order --only "$ACCEPTANCE"
done
for rho in 100 50; do
  step --imbalances "$rho" --in-order --only "$NEAR_UNIFORM"
done
for rho in 100 50 200 10; do
  step --imbalances "$rho"
done
for rho in 100 50 200 10; do
  step --imbalances "$rho" --seeds 3,4 --in-order --only "$($PY benchmarks/accuracy/report.py --headline "$rho")"
done
