"""Runs both ops benchmarks and writes ``docs/benchmarks/ops.json`` and ``docs/benchmarks/ops.md``.

    .venv/bin/python benchmarks/ops/run_all.py            # the full run (about 6 minutes on 2 loaded cores)
    .venv/bin/python benchmarks/ops/run_all.py --quick    # 3 rounds each: a smoke test, not for the figures
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_losses
import bench_trainer
import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/benchmarks/ops.json")
    parser.add_argument("--md", default="docs/benchmarks/ops.md")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", default="1")
    args = parser.parse_args()
    loss_args = ["--out", "", "--threads", args.threads] + (["--reps", "3", "--warmup", "1"] if args.quick else [])
    trainer_args = ["--out", "", "--threads", args.threads] + (["--reps", "2"] if args.quick else [])
    results = {"losses": bench_losses.main(loss_args), "trainer": bench_trainer.main(trainer_args)}
    results["command"] = " ".join(["python", *sys.argv])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    report.main(["--results", str(out), "--out", args.md])


if __name__ == "__main__":
    main()
