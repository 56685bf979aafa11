"""A grid of finetune settings run through bertops' own training loop, several trials at a time,
each scored on the validation slice carved from train (the eval split is never read: the
workspace may hold an empty eval.parquet).

`bertops tune` is the product's search (Ray Tune, ASHA). This script is for a machine without
Ray, typically a lent GPU, where several small trials share one device: every grid point is a
subprocess running `finetune_in_process` on its own copy of the workspace's params (the prepared
data is shared, read-only). Trials are launched until `--deadline-s`; any still running at the
hard limit (deadline + `--grace-s`) are stopped and reported as unfinished.

    python bench/finetune_grid.py --workspace WS --grid finetune.lr=5e-5,1e-4 finetune.epochs=2,3 \
        --parallel 8 --out grid.json

Prints one line per finished trial and writes every trial's result (best validation accuracy and
step, seconds, device, precision, history) to `--out`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _trial(spec: dict) -> None:
    """Run one grid point in this process; print its result as the last line."""
    from bertops.config import load_config
    from bertops.training.finetune import finetune_in_process

    root = Path(spec["root"])
    config = load_config(root / "params.yaml", overrides=spec["overrides"])
    result = finetune_in_process(config, root)
    keep = ("best_validation_accuracy", "best_step", "steps", "train_seconds", "device", "precision", "history")
    print(json.dumps({k: getattr(result, k) for k in keep}))


def grid_points(axes: list[str]) -> list[list[str]]:
    """["a=1,2", "b=x"] -> [["a=1", "b=x"], ["a=2", "b=x"]]."""
    keyed = []
    for axis in axes:
        key, _, values = axis.partition("=")
        if not key or not values:
            raise SystemExit(f"--grid {axis!r}: write key=value1,value2")
        keyed.append([f"{key}={v}" for v in values.split(",")])
    return [list(point) for point in itertools.product(*keyed)]


class Subprocesses:
    """Subprocesses by key, each writing to its own log file. `poll` hands back those that ended,
    or, with `kill`, stops the rest: (key, status done | crashed | unfinished, log lines)."""

    def __init__(self) -> None:
        self.running: dict = {}

    def __len__(self) -> int:
        return len(self.running)

    def start(self, key, argv: list[str], log: Path) -> None:
        with log.open("w") as handle:
            self.running[key] = (subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT), log)

    def poll(self, kill: bool = False) -> list[tuple]:
        ended = []
        for key, (proc, log) in list(self.running.items()):
            if proc.poll() is None and not kill:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                status = "unfinished"
            else:
                status = "done" if proc.returncode == 0 else "crashed"
            ended.append((key, status, log.read_text().strip().splitlines()))
            del self.running[key]
        return ended


def trial_argv(root: Path, overrides: list[str]) -> list[str]:
    """The command of one trial: `finetune_in_process` on the workspace `root` with `overrides`."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--trial",
        json.dumps({"root": str(root), "overrides": overrides}),
    ]


def trial_result(status: str, lines: list[str]) -> dict:
    """A trial's status and, when it finished, the result it printed last (else its log's tail)."""
    entry: dict = {"status": status}
    try:
        entry.update(json.loads(lines[-1]) if status == "done" else {})
    except (IndexError, json.JSONDecodeError):
        entry["status"] = "crashed"
    if entry["status"] != "done":
        entry["log_tail"] = lines[-15:]
    return entry


def trial_workspace(workspace: Path, root: Path) -> Path:
    """A trial's own folder: a copy of the workspace's params.yaml, its prepared data linked (read-only)."""
    root.mkdir(parents=True)
    shutil.copy(workspace / "params.yaml", root / "params.yaml")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, help="holds params.yaml and data/prepared/<dataset>/")
    parser.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 ... (the cartesian product is run)")
    parser.add_argument("--fixed", nargs="*", default=[], help="overrides every trial gets")
    parser.add_argument("--seeds", default="42", help="comma-separated finetune.seed values per point")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--deadline-s", type=float, default=float("inf"), help="launch no trial after this")
    parser.add_argument("--grace-s", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=Path("bench/out/finetune_grid.json"))
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        return _trial(json.loads(args.trial))

    workspace = args.workspace.resolve()
    # seed-major: every point once before any point's second seed (a deadline cuts seeds, not points)
    points = [point + [f"finetune.seed={seed}"] for seed in args.seeds.split(",") for point in grid_points(args.grid)]
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"bertops-grid-{os.getpid()}"
    start, pending, trials, results = time.time(), list(enumerate(points)), Subprocesses(), []
    while pending or trials:
        elapsed = time.time() - start
        while pending and len(trials) < args.parallel and elapsed < args.deadline_s:
            index, overrides = pending.pop(0)
            root = trial_workspace(workspace, scratch / str(index))
            (root / "data").symlink_to(workspace / "data")
            trials.start(index, trial_argv(root, args.fixed + overrides), root / "log.txt")
        for index, status, lines in trials.poll(kill=elapsed > args.deadline_s + args.grace_s):
            entry = {"overrides": points[index]} | trial_result(status, lines)
            results.append(entry)
            print(
                f"[{time.time() - start:6.0f}s] {entry['status']:10} {' '.join(points[index])} "
                f"val={entry.get('best_validation_accuracy')} step={entry.get('best_step')} "
                f"t={entry.get('train_seconds')}",
                flush=True,
            )
            shutil.rmtree(scratch / str(index), ignore_errors=True)
        if elapsed >= args.deadline_s and not trials:
            break
        time.sleep(1.0)
    unfinished = [points[i] for i, _ in pending]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"fixed": args.fixed, "trials": results, "not_started": unfinished, "seconds": time.time() - start}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    done = sorted((r for r in results if r["status"] == "done"), key=lambda r: -r["best_validation_accuracy"])
    print("\nbest on the validation slice:")
    for r in done[:10]:
        print(f"  {r['best_validation_accuracy']:.4f}  step {r['best_step']:>5}  {' '.join(r['overrides'])}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
