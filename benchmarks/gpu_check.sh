#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script (a lent GPU machine's time is short): run from the repository root
# with Fashion-MNIST's four .gz files in $LONGTAIL_DATA and an output folder as $1 (default runs/gpu-check).
#   LONGTAIL_DATA=/usr/share/datasets/fashion-mnist bash benchmarks/gpu_check.sh runs/gpu-check
# 1. The test suite with a GPU present (the CUDA-only tests run; `device="auto"` resolves to CUDA), in parallel with
# 2. the fmnist-lt preset at imbalance 100 on CUDA: CE and the class-balanced sigmoid (beta 0.9999), seeds 0-2, with
#    `--amp auto` (bfloat16 on CUDA), CE seed 0 in float32 (`--amp off`) and CE seed 0 with `--compile`; four runs
#    at a time, so their wall times are of a shared GPU (the speed figure is step 3's);
# 3. then, alone: benchmarks/ops/bench_trainer.py on CUDA (the trainer against a bare loop, images per second).
# Each step has a time limit; the script ends with a one-line summary per run (test error, wall seconds).
set -uo pipefail
OUT=${1:-runs/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  | tee -a "$OUT/gpu.txt"
if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1; then
  # an older setuptools cannot build this project: the source tree and a `longtail` command that runs it
  export PYTHONPATH=$PWD/src
  printf '#!/bin/sh\nexec %s -m longtail "$@"\n' "$(command -v "$PY")" > /usr/local/bin/longtail
  chmod +x /usr/local/bin/longtail
  echo "pip install -e . failed (see install.log): PYTHONPATH=src" | tee -a "$OUT/gpu.txt"
fi

train() {  # name, then longtail train options
  local name=$1; shift
  timeout 240 longtail train --preset fmnist-lt --imbalance 100 --device cuda --quiet --out "$OUT/runs/$name" "$@" \
    > "$OUT/runs/$name.log" 2>&1 || echo "$name: exit $?" >> "$OUT/runs/$name.log"
}
mkdir -p "$OUT/runs"
(train ce_s0 --seed 0 --subset-seed 0; train ce_s0_fp32 --seed 0 --subset-seed 0 --amp off) &
(train ce_s1 --seed 1 --subset-seed 1; train ce_s0_compile --seed 0 --subset-seed 0 --compile) &
(train ce_s2 --seed 2 --subset-seed 2; train cbsig_s2 --seed 2 --subset-seed 2 --loss cb_sigmoid --beta 0.9999) &
(train cbsig_s0 --seed 0 --subset-seed 0 --loss cb_sigmoid --beta 0.9999;
 train cbsig_s1 --seed 1 --subset-seed 1 --loss cb_sigmoid --beta 0.9999) &
timeout 300 "$PY" -m pytest -q -n 8 -p no:cacheprovider > "$OUT/pytest.log" 2>&1
echo "pytest exit $?" >> "$OUT/pytest.log"
wait
tail -3 "$OUT/pytest.log"
timeout 150 "$PY" benchmarks/ops/bench_trainer.py --device cuda --reps 3 --out "$OUT/ops_trainer_cuda.json" \
  > "$OUT/bench_trainer.log" 2>&1 || echo "bench_trainer exit $?" >> "$OUT/bench_trainer.log"
tail -25 "$OUT/bench_trainer.log"
"$PY" - "$OUT/runs" <<'EOF'
import json, sys
from pathlib import Path
for folder in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    try:
        r = json.loads((folder / "result.json").read_text())
        print(f"{folder.name:<14} {r['status']:<9} error {100 * (1 - r['final']['accuracy']):6.2f} %  "
              f"autocast {r['autocast']}  train {r['train_seconds']:6.1f} s  wall {r['wall_seconds']:6.1f} s")
    except Exception as exc:  # a run that failed: its log says why
        print(f"{folder.name:<14} no result ({type(exc).__name__}: {exc})")
EOF
