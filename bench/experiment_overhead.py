"""What recording a run costs: the retrain flow on the smoke profile, recorded as a DVC experiment
(params.yaml holds the run's values, DVC's commit of each stage made by a worker process while the
next ones run, the experiment's git commit, the comparison artifact) against the same flow
unrecorded (`runs.record=false`, the direct executor as before).

Both run in one fresh git + DVC workspace (a copy of this repository's pipeline files, the SST-2
corpus from BERTOPS_DATASETS or ../shared/datasets), with the same overrides (the smoke profile,
a lenient gate so every run goes to the end), in `--repeats` rounds whose order alternates (round r
starts with the recorded side when r is odd), so a slow spell of the machine does not land on one
side only. Per side: the median wall time of the flow and the spread (min-max); the overhead is the
ratio of the medians, and the median of each round's own ratio (the two runs of a round are
neighbours in time). Since the flows' medians spread more than the effect, the recorded side's
own seconds are printed too: the record task, and the experiment path on the run's critical path
(its set-up at the start, the record task, the push after it) as a share of the direct median;
the worker's commits made while the stages run are not in it, only in the flows' times.

    python bench/experiment_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._common import datasets_root  # noqa: E402


def workspace(base: Path) -> Path:
    """A git + DVC repository holding the pipeline (params.yaml, dvc.yaml, the code DVC hashes)."""
    root = base / "ws"
    root.mkdir()
    for item in ("params.yaml", "dvc.yaml", ".gitignore"):
        shutil.copy(REPO / item, root / item)
    for folder in ("serving", "bertops", "data/behaviour", "configs"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "bertops_*"))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for args in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], git + ["add", "-A"]):
        subprocess.run(args, cwd=root, check=True, capture_output=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=root, check=True, capture_output=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the workspace (its path is printed)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    base = Path(tempfile.mkdtemp(prefix="bertops-bench-exp-"))
    os.environ["BENTOML_HOME"] = str(base / "bentoml")
    root = workspace(base)
    data = datasets_root()
    overrides = [
        f"ingest.search_paths=['{data / 'sst2'}']",
        f"evaluate.embedding.retrieval.search_paths=['{data / 'squad-v1.1'}']",
        "gate.non_inferiority_margin=1.0",
        "gate.slice_non_inferiority_margin=1.0",
        "gate.min_behaviour_pass_rate=null",
        "gate.max_p95_latency_ratio=null",
        "gate.max_p95_latency_ms=100000",
    ]
    from prefect.testing.utilities import prefect_test_harness

    from bertops_flows.pipeline import retrain

    times: dict[str, list[float]] = {"direct": [], "recorded": []}
    record_seconds: list[float] = []
    path_seconds: list[float] = []  # set-up + record task + push: all the recorded side adds
    with prefect_test_harness(server_startup_timeout=120):
        for r in range(args.repeats):
            order = ["recorded", "direct"] if r % 2 else ["direct", "recorded"]
            for side in order:
                extra = [] if side == "recorded" else ["runs.record=false"]
                started = time.perf_counter()
                state = retrain(
                    params=str(root / "params.yaml"),
                    profile=str(root / "configs" / "smoke.yaml"),
                    overrides=overrides + extra,
                    root=str(root),
                    return_state=True,
                )
                seconds = time.perf_counter() - started
                if not state.is_completed():
                    sys.exit(f"the {side} run failed: {state.message}")
                summary = state.result()
                if side == "recorded":
                    assert summary["recorded"], "the recorded side was not recorded"
                    record_seconds.append(summary["record_seconds"])
                    path_seconds.append(summary["experiment_seconds"])
                times[side].append(seconds)
                print(f"round {r + 1} {side:<9} {seconds:7.1f} s", flush=True)
    direct, recorded = statistics.median(times["direct"]), statistics.median(times["recorded"])
    print()
    print(f"machine: {os.cpu_count()} cores; smoke profile; {args.repeats} rounds, alternating order")
    for side in ("direct", "recorded"):
        values = times[side]
        print(f"{side:<9} median {statistics.median(values):6.1f} s  (min {min(values):.1f}, max {max(values):.1f})")
    print(f"record task: median {statistics.median(record_seconds):.1f} s (min {min(record_seconds):.1f}, "
          f"max {max(record_seconds):.1f})")  # fmt: skip
    path = statistics.median(path_seconds)
    print(f"experiment path (set-up + record task + push): median {path:.2f} s (min {min(path_seconds):.2f}, "
          f"max {max(path_seconds):.2f}) = {path / direct * 100:.1f}% of the direct median")  # fmt: skip
    print(f"overhead: recorded / direct = {recorded / direct:.3f} ({(recorded / direct - 1) * 100:+.1f}%)")
    rounds = [r / d for r, d in zip(times["recorded"], times["direct"], strict=True)]
    print(f"per round: median {statistics.median(rounds):.3f} (min {min(rounds):.3f}, max {max(rounds):.3f})")
    if args.keep:
        print(f"workspace kept: {root}")
    else:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
