"""Runs the accuracy matrix (resumable: finished cells are not re-run).

    python benchmarks/accuracy/run.py [--out benchmarks/results/accuracy] [--workers 2] [--only ce,cb_softmax_b0.9999]
    python benchmarks/accuracy/run.py --grid convergence --imbalances 100 --out benchmarks/results/convergence
    python benchmarks/accuracy/run.py --grid quick --imbalances 100 --seeds 0 --out runs/bench-quick   # make bench-quick
    python benchmarks/accuracy/run.py --imbalances 100 --in-order --only ce,cdb_stable,...   # cells in this order

Each run is one job; a worker keeps the data it prepared for an (imbalance, seed) and reuses it for
the next run of that pair. Workers use one intra-op thread each (small models use two
single-threaded processes better than one two-threaded one). A cell whose result.json says "complete" is skipped; a cell
interrupted mid-way resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix import (  # noqa: E402
    GRIDS,
    IMBALANCES,
    PRECISION_NAMES,
    SEEDS,
    TUNE_FILE,
    Cell,
    config_for,
    omitted,
    precision_of,
    run_folder,
    same_recipe,
    tuning_is_current,
)
from report import _metric  # noqa: E402


_DATA_CACHE: dict[tuple[float, int], Any] = {}
# --no-start-after, as seconds since the epoch, in each worker (the pool's initializer sets it).
_NO_START_AFTER: float | None = None


def _set_no_start_after(when: float | None) -> None:
    global _NO_START_AFTER
    _NO_START_AFTER = when


def _too_late(imbalance: float, seed: int, cell: Cell) -> bool:
    """Whether a run that would start now is past ``--no-start-after`` (it is then not started, and says so)."""
    if _NO_START_AFTER is None or time.time() <= _NO_START_AFTER:
        return False
    print(f"rho {imbalance:>5g}  seed {seed}  {cell.name:<24} not started: past --no-start-after "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(_NO_START_AFTER))}", flush=True)
    return True


def utc_time(text: str) -> float:
    """``"YYYY-MM-DD HH:MM"`` (UTC) as seconds since the epoch; an ``argparse`` type."""
    import calendar

    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a UTC time as YYYY-MM-DD HH:MM; got {text!r}") from None


def run_state(imbalance: float, seed: int, cell: Cell, out: str | Path) -> str:
    """``"finished"`` (a complete result of this cell's recipe, or for a ``tune_beta`` cell a ``tune_beta.json`` of
    its configuration and the installed selection rule), ``"stale"`` (a result of another recipe: it starts over),
    or ``"todo"`` (nothing yet, or a run stopped part-way, which resumes)."""
    from longtail.train import TrainConfig

    folder = run_folder(out, imbalance, cell.name, seed)
    config = TrainConfig(**config_for(cell, imbalance, seed, out)).to_dict()
    if cell.kind == "tune_beta":
        target = folder / TUNE_FILE
        return "finished" if target.exists() and tuning_is_current(json.loads(target.read_text()), config) else "todo"
    result_file = folder / "result.json"
    if not result_file.exists():
        return "todo"
    saved = json.loads(result_file.read_text())
    # from_dict fills in fields added to TrainConfig since the cell ran.
    if not same_recipe(TrainConfig.from_dict(saved["config"]).to_dict(), config, saved.get("autocast")):
        return "stale"
    return "finished" if saved.get("status") == "complete" else "todo"


def drop_omitted(pairs: list[tuple[float, int, Cell]]) -> list[tuple[float, int, Cell]]:
    """The (imbalance, seed, cell) runs less those of the cells the matrix leaves out at their imbalance
    (:func:`matrix.omitted`), with one line a imbalance saying which."""
    kept = [(rho, seed, cell) for rho, seed, cell in pairs if cell.name not in omitted(rho)]
    for rho in sorted({rho for rho, _, _ in pairs}, reverse=True):
        names = list(dict.fromkeys(c.name for r, _, c in pairs if r == rho and c.name in omitted(rho)))
        if names:
            print(f"rho {rho:>5g}  left out (uniform class-balanced weights; --include-omitted trains them): "
                  + ", ".join(f"{n} (= {omitted(rho)[n]})" for n in names), flush=True)
    return kept


def needs_checkpoint(cell: Cell) -> bool:
    """Whether the cell starts from its parent's weights (a later stage, or tune-beta's refits on the CE run)."""
    return cell.starts_from_parent or cell.kind == "tune_beta"


def precision(cell: Cell, imbalance: float, seed: int, out: str | Path) -> str:
    """The precision this machine trains ``cell`` in, as ``result.json`` records it (``"bfloat16"`` or ``"off"``).

    ``out`` gives a later stage its parent's folder: without ``init_from`` a 0-epoch or classifier stage is not a
    valid configuration."""
    from longtail.train import TrainConfig

    config = TrainConfig(**config_for(cell, imbalance, seed, out))
    return precision_of(config.amp, config.device)


#: The exit status when the runs asked for would mix precisions within an imbalance (run_matrix.sh skips the step).
REFUSED_PRECISION = 3


def finished_precisions(out: str | Path, imbalance: float) -> dict[str, int]:
    """How many finished runs under ``out`` at ``imbalance`` trained in each precision (``result.json``'s
    ``autocast``)."""
    paths = (Path(out) / "runs" / f"rho{imbalance:g}").glob("*/seed*/result.json")
    results = (json.loads(path.read_text()) for path in paths)
    return dict(Counter(r.get("autocast", "?") for r in results if r.get("status") == "complete"))


def precision_refusal(out: str | Path, imbalance: float, before: dict[str, int], here: set[str], left: int) -> str:
    """The line ``main`` prints when the ``left`` runs to train at ``imbalance`` (in the precisions ``here``) would
    join finished runs of another precision (``before``, from :func:`finished_precisions`)."""
    trained = ", ".join(f"{PRECISION_NAMES.get(k, k)} ({v} runs)" for k, v in sorted(before.items()))
    return (f"run.py: refused: at imbalance {imbalance:g} the finished runs under {out} trained in precision "
            f"{trained}; "
            f"this machine would train the {left} runs left in "
            f"{', '.join(PRECISION_NAMES.get(k, k) for k in sorted(here))} "
            "(amp='auto' is bfloat16 only where the CPU has native bfloat16): run them on such a machine, or pass "
            "--mixed-precision to mix the two in one comparison")


def _run_cell(job: tuple[float, int, Cell, str, bool]) -> tuple[str, float, int, float] | None:
    """Trains one cell (skipped when finished with the same recipe); workers keep the last prepared data.

    A finished parent of a later stage whose checkpoint is gone (checkpoints are not committed) is trained again
    into its folder, so its children have weights to start from. The recorded run is set aside first: a retrain
    that reproduces its final metrics (the same CPU kind) keeps the new checkpoint; one that does not (measured: an
    AMD EPYC with AVX512-BF16 retraining an Intel AMX run in bfloat16 moved CE's test accuracy by up to 0.7 point)
    restores the recorded run and drops the checkpoint, so no child starts from weights other than the recorded
    run's and nothing recorded is lost (its later stages then fail with "no checkpoint" and a line says why; the
    tune_beta cell trains its own CE run instead, :func:`_tune_cell`). A parent whose ``result.json`` records other
    hardware (:func:`longtail.train.device.hardware`) is not retrained at all.
    """
    import torch

    from longtail.train import TrainConfig, prepare_data, train
    from longtail.train.device import describe_hardware, hardware, same_hardware

    imbalance, seed, cell, out, is_parent = job
    torch.set_num_threads(1)
    folder = run_folder(out, imbalance, cell.name, seed)
    if cell.kind == "tune_beta":
        return _tune_cell(imbalance, seed, cell, out, folder)
    config = TrainConfig(**config_for(cell, imbalance, seed, out))
    before = None
    recorded = folder.with_name(f".{folder.name}.recorded")  # outside the seed* glob of the report
    if recorded.exists():  # a retrain for the checkpoint was killed part-way: the recorded run comes back first
        _restore(folder, recorded)
    state = run_state(imbalance, seed, cell, out)
    if state == "finished" and (not is_parent or (folder / "checkpoint.pt").exists()):
        return None
    if _too_late(imbalance, seed, cell):
        return None
    if state == "finished":
        recorded_run = json.loads((folder / "result.json").read_text())
        trained_on, here = recorded_run.get("hardware"), hardware(torch.device("cpu"))
        if trained_on is not None and not same_hardware(trained_on, here):  # older results do not record it
            print(f"rho {imbalance:>5g}  seed {seed}  {cell.name:<24} not retrained for its checkpoint: it ran on "
                  f"{describe_hardware(trained_on)}, this machine is {describe_hardware(here)} (a retrain would not "
                  "reproduce it): later "
                  "stages that start from its weights are not trained on this machine (tune_beta trains its own CE "
                  "run)", flush=True)
            return None
        before = recorded_run["final"]
        folder.rename(recorded)  # its children need its weights: the same seeded run again
    elif state == "stale":  # the recipe changed: this cell starts over
        shutil.rmtree(folder)
    key = (imbalance, seed)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset per worker at a time
        _DATA_CACHE[key] = prepare_data(config, torch.device("cpu"))
    start = time.perf_counter()
    try:
        result = train(config, folder, resume=True, verbose=0, data=_DATA_CACHE[key])
    except Exception as exc:  # one failed cell must not stop the matrix: report it and go on
        print(f"rho {imbalance:>5g}  seed {seed}  {cell.name:<24} FAILED: {type(exc).__name__}: {exc}", flush=True)
        if before is not None:
            _restore(folder, recorded)
        return None
    seconds = time.perf_counter() - start
    again = ""
    if before is not None:
        if _same_final(result["final"], before):
            shutil.rmtree(recorded)
            again = "  (retrained for its checkpoint: the recorded result reproduced)"
        else:
            _restore(folder, recorded)
            again = (f"  (retrained for its checkpoint: NOT reproduced, test accuracy {before['accuracy']} recorded, "
                     f"{result['final']['accuracy']} now; the recorded run kept, its checkpoint dropped: later "
                     "stages that start from its weights are not trained on this machine; tune_beta trains its own "
                     "CE run)")
    print(f"rho {imbalance:>5g}  seed {seed}  {cell.name:<24} {seconds:6.1f}s{again}", flush=True)
    return cell.name, imbalance, seed, seconds


def _same_final(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs' final test metrics agree (the seeded run reproduced)."""
    return all(a.get(k) == b.get(k) for k in ("accuracy", "balanced_accuracy", "per_class_accuracy"))


def _restore(folder: Path, recorded: Path) -> None:
    """Puts the recorded run back in place of a retrain that did not reproduce it (the retrain is discarded)."""
    if folder.exists():
        shutil.rmtree(folder)
    recorded.rename(folder)


def _tune_cell(imbalance: float, seed: int, cell: Cell, out: str, folder: Path) -> tuple[str, float, int, float] | None:
    """``longtail.tune_beta`` on the parent's finished CE run (copied into ``<folder>/ce``, which tune_beta reuses):
    the CE run is not trained again, only the features, covering numbers and head refits are computed. Where the
    parent is finished but its checkpoint cannot be had on this machine (recorded on another CPU kind, or a retrain
    did not reproduce it), tune_beta trains its own CE run of the same recipe and seed in ``<folder>/ce``, and the
    line printed gives both runs' test accuracy."""
    from longtail import tune_beta
    from longtail.train import TrainConfig

    config = TrainConfig(**config_for(cell, imbalance, seed, out))
    if run_state(imbalance, seed, cell, out) == "finished" or _too_late(imbalance, seed, cell):
        return None
    parent = run_folder(out, imbalance, cell.parent, seed)
    own_ce = False
    if not (parent / "checkpoint.pt").exists():
        if run_state(imbalance, seed, _cell(cell.parent), out) != "finished":
            print(f"rho {imbalance:>5g}  seed {seed}  {cell.name:<24} FAILED: its parent {parent} has no checkpoint",
                  flush=True)
            return None
        # The parent's recorded run cannot be reproduced here (it ran on another CPU kind, or a retrain moved its
        # metrics): tune_beta trains its own CE run, the same recipe and seed, into <folder>/ce, whose result.json
        # records this machine and its own metrics. tune_beta only reads the CE run's features, so its choice is
        # that of a CE run of this recipe, not of the table's CE run.
        own_ce = True
    ce = folder / "ce"
    if ce.exists() and (not own_ce or _ce_copied_from(ce, parent)):  # an own CE run is kept, to resume or reuse
        shutil.rmtree(ce)
    if not own_ce:
        ce.mkdir(parents=True)
        for name in ("result.json", "checkpoint.pt"):
            shutil.copy2(parent / name, ce / name)
    start = time.perf_counter()
    try:
        # per-class candidates too: their best radius is the cb_softmax_per_class_beta cell's
        result = tune_beta(config, out_dir=folder, overwrite=True, per_class_beta=True)
    except Exception as exc:  # one failed cell must not stop the matrix
        print(f"rho {imbalance:>5g}  seed {seed}  {cell.name:<24} FAILED: {type(exc).__name__}: {exc}", flush=True)
        return None
    if not own_ce:
        (ce / "checkpoint.pt").unlink()  # a copy of the parent's (checkpoints are not committed)
    seconds = time.perf_counter() - start
    own = ("  (its own CE run, trained here: the parent's recorded run is not reproducible on this machine; "
           f"test accuracy {json.loads((ce / 'result.json').read_text())['final']['accuracy']} here, "
           f"{json.loads((parent / 'result.json').read_text())['final']['accuracy']} recorded)") if own_ce else ""
    print(f"rho {imbalance:>5g}  seed {seed}  {cell.name:<24} {seconds:6.1f}s  chose {result.chosen['label']}{own}",
          flush=True)
    return cell.name, imbalance, seed, seconds


def _cell(name: str) -> Cell:
    """The matrix cell called ``name``."""
    return next(c for c in GRIDS["matrix"]() if c.name == name)


def _ce_copied_from(ce: Path, parent: Path) -> bool:
    """Whether ``ce`` (a tune_beta cell's CE folder) holds a copy of ``parent``'s recorded run."""
    try:
        return json.loads((ce / "result.json").read_text()) == json.loads((parent / "result.json").read_text())
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", choices=sorted(GRIDS), default="matrix", help="which set of cells")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accuracy"))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", default="", help="comma-separated cell names (default: all)")
    parser.add_argument("--imbalances", default=",".join(str(r) for r in IMBALANCES))
    parser.add_argument("--seeds", default=",".join(str(s) for s in SEEDS))
    parser.add_argument("--in-order", action="store_true",
                        help="train the --only cells in the order listed, every seed of one before the next (default: "
                             "the longest runs first), so a matrix cut short has whole cells done")
    parser.add_argument("--no-start-after", type=utc_time, default=None, metavar="'YYYY-MM-DD HH:MM'",
                        help="start no run after this UTC time; runs already going finish (a session that ends at a "
                             "fixed time then keeps whole runs instead of checkpoints it cannot carry over)")
    parser.add_argument("--include-omitted", action="store_true",
                        help="also train the cells the matrix leaves out at an imbalance (their class-balanced weights "
                             "are uniform there, so they train the loss of another cell: matrix.omitted)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="train even where this machine's precision (amp='auto': bfloat16 only with native "
                             "bfloat16) differs from that of the finished runs at the same imbalance")
    args = parser.parse_args(argv)

    grid = GRIDS[args.grid]()
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {c.name for c in grid}
        if unknown:
            parser.error(f"unknown cells {sorted(unknown)}; known: {[c.name for c in grid]}")
        grid = [c for c in grid if c.name in wanted]
    imbalances = [float(v) for v in args.imbalances.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    # One job per run, the most imbalanced (the headline numbers) first, so the workers stay busy to the
    # end and a matrix cut short leaves whole imbalances done; it may be finished over several sessions.
    pairs = [(rho, seed, cell) for rho in sorted(imbalances, reverse=True) for seed in seeds for cell in grid]
    if args.grid == "matrix" and not args.include_omitted:
        pairs = drop_omitted(pairs)
    todo = {(rho, seed, cell.name) for rho, seed, cell in pairs if run_state(rho, seed, cell, args.out) != "finished"}
    # A finished parent is trained again for its checkpoint (not committed) only when a child that starts from its
    # weights still has to run.
    waiting = {(rho, seed, cell.parent) for rho, seed, cell in pairs
               if cell.parent is not None and needs_checkpoint(cell) and (rho, seed, cell.name) in todo}
    jobs = [(rho, seed, cell, str(args.out), (rho, seed, cell.name) in waiting) for rho, seed, cell in pairs]
    # Every run of one comparison in one precision: a machine without native bfloat16 trains `amp="auto"` cells in
    # float32, which the runs it would be compared with (trained in bfloat16 elsewhere) are not.
    for rho in sorted({rho for rho, _, _ in todo}, reverse=True):
        left = [(seed, cell) for r, seed, cell in pairs if r == rho and (r, seed, cell.name) in todo]
        before = finished_precisions(args.out, rho)
        here = {precision(cell, rho, seed, args.out) for seed, cell in left if cell.kind == "train"}
        if before and here - set(before) and not args.mixed_precision:
            print(precision_refusal(args.out, rho, before, here, len(left)), file=sys.stderr)
            return REFUSED_PRECISION
    # Within an imbalance, the longest runs first (epochs x width), so no worker is left with a long one at the end.
    if args.in_order and args.only:
        listed = {name: i for i, name in enumerate(args.only.split(","))}
        jobs.sort(key=lambda job: (-job[0], listed[job[2].name], job[1]))
    else:
        jobs.sort(key=lambda job: (-job[0], -_cost(job[2])))

    # Later stages start from their parent's finished run: parents first, then their children (one wave each).
    names = {c.name for c in grid}
    missing = sorted({c.parent for c in grid if c.parent is not None and c.parent not in names})
    if missing:
        parser.error(f"cells {sorted(c.name for c in grid if c.parent in missing)} start from {missing}: "
                     "add them to --only")
    by_name = {c.name: c for c in grid}

    def depth(cell: Cell) -> int:
        return 0 if cell.parent is None else 1 + depth(by_name[cell.parent])

    waves = [[job for job in jobs if depth(job[2]) == d] for d in range(1 + max(depth(c) for c in grid))]

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    finished: list[tuple[str, float, int, float]] = []
    # The session's manifest entry is rewritten (atomically) after every finished run, so a matrix stopped part-way
    # (it may span sessions) still records what this invocation trained and for how long.
    from longtail.io import write_json

    manifest_path = args.out / "manifest.json"
    session: dict[str, Any] = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start)),
        "pid": os.getpid(),
        "workers": args.workers,
        "machine": _machine(),
    }

    def record(done: bool) -> None:
        # Re-read the file each time and replace only this invocation's entry: another invocation writing to the
        # same folder keeps its own.
        session.update(wall_seconds=time.time() - start, cells_trained=len(finished),
                       cpu_seconds_of_runs=sum(row[3] for row in finished), finished=done)
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"sessions": []}
        key = (session["started"], session["pid"])
        entries = [e for e in manifest["sessions"] if (e.get("started"), e.get("pid")) != key]
        manifest["sessions"] = [*entries, session]
        write_json(manifest_path, manifest)

    record(False)
    # `kill PID` (SIGTERM) leaves through the `with` block as Ctrl-C does, so the pool terminates its workers: without
    # this the spawned workers outlived a killed runner, kept training and held their run folders' locks.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with mp.get_context("spawn").Pool(args.workers, initializer=_set_no_start_after,
                                      initargs=(args.no_start_after,)) as pool:
        for wave in waves:
            for row in pool.imap(_run_cell, wave, chunksize=1):
                if row is not None:
                    finished.append(row)
                    record(False)
    record(True)
    print(f"{len(finished)} runs in {time.time() - start:.0f}s; results under {args.out}/runs")
    print(_summary(jobs, str(args.out)))
    return 0


def _summary(jobs: list[tuple[float, int, Cell, str, bool]], out: str) -> str:
    """Test and validation error of every finished run of this invocation's cells (trained now or before)."""
    lines = [f"{'imbalance':>9}  {'seed':>4}  {'cell':<28} {'test error %':>12}  {'val error %':>11}"]
    for rho, seed, cell, _, _ in sorted(jobs, key=lambda j: (-j[0], j[2].name, j[1])):
        path = run_folder(out, rho, cell.name, seed) / "result.json"
        if cell.kind != "train" or not path.exists():
            continue
        result = json.loads(path.read_text())
        if result.get("status") != "complete":
            continue
        val = _metric(result, "val_error")
        lines.append(f"{rho:>9g}  {seed:>4}  {cell.name:<28} {_metric(result, 'error'):>12.2f}  "
                     f"{'-' if val is None else f'{val:.2f}':>11}")
    return "\n".join(lines)


def _cost(cell: Cell) -> float:
    from matrix import RECIPE

    settings = {**RECIPE, **cell.overrides}
    return settings["epochs"] * settings["width"] ** 1.5


def _machine() -> dict[str, Any]:
    import torch

    from longtail.train.device import hardware

    # `native_bfloat16` is what `amp="auto"` trains in here: reports name the machines of one precision from it.
    return {**hardware(torch.device("cpu")), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


if __name__ == "__main__":
    sys.exit(main())
