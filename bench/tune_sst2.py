"""`bertops tune` on SST-2 at a budget this 2-core machine can afford, then the chosen setting
against the current defaults on the evaluation split, once.

1. A workspace with a stratified sample of SST-2 train (`--train-rows`, default 8,000) and a
   validation slice of 10% of it carved by `prepare` (800 rows; the default 2% of 8,000 would be
   160, too few to choose between settings). The eval split is SST-2 dev (872), untouched.
2. `bertops tune` with params.yaml's search space, `--trials` trials (the defaults are the first),
   two at a time on one core each, ASHA on validation evaluations every `--eval-every` steps.
3. The defaults and the chosen profile, each trained on the same sample (2 cores, one at a time)
   and evaluated by the `evaluate` stage on the served runtime: accuracy on dev, and the paired
   bootstrap CI and McNemar's p of the difference on the same 872 sentences.

The budget is the caveat: the search chooses for 8,000 rows, and the shipped default trains on
67,349. Printed as a markdown report (and written to bench/out/tune_sst2.md).

    python bench/tune_sst2.py [--train-rows 8000] [--trials 8] [--eval-every 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._common import datasets_root  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = Path(tempfile.mkdtemp(prefix="bertops-bench-tune-"))
    os.environ["BENTOML_HOME"] = str(base / "bentoml")
    root = base / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "data" / "behaviour", root / "data" / "behaviour")
    data = datasets_root()
    from bertops.config import load_config
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.stats import compare
    from bertops.training.finetune import finetune
    from bertops.tuning import markdown, tune

    common = [
        f"ingest.search_paths=['{data / 'sst2'}']",
        f"prepare.max_train_rows={args.train_rows}",
        "prepare.validation_fraction=0.1",
        f"finetune.eval_every={args.eval_every}",
        "finetune.progress=false",
        "finetune.checkpoint_every=0",
        "evaluate.embedding=null",
        "evaluate.latency_requests=20",
    ]
    os.chdir(root)
    config = load_config("params.yaml", None, common)
    ingest(config, root)
    validate(config, root)
    prepare(config, root)

    started = time.perf_counter()
    summary = tune(
        load_config(
            "params.yaml",
            None,
            common + [f"tune.num_samples={args.trials}", "tune.max_concurrent=2", "tune.cpus_per_trial=1"],
        ),
        root,
    )
    search_minutes = (time.perf_counter() - started) / 60
    report = [f"# bertops tune on SST-2 ({args.train_rows} train rows, {os.cpu_count()} cores)", "", markdown(summary)]
    report.append(f"\nsearch wall time: {search_minutes:.1f} min\n")

    results = {}
    for side, profile in (("defaults", None), ("tuned", summary.profile)):
        side_config = load_config("params.yaml", profile, common)
        trained = finetune(side_config, root)
        evaluate(side_config, root)
        metrics = json.loads((root / "reports" / "evaluate" / "metrics.json").read_text())
        report_json = json.loads((root / "reports" / "evaluate" / "report.json").read_text())
        probabilities = np.load(root / "reports" / "evaluate" / "probabilities.npy")
        results[side] = {
            "validation": trained.best_validation_accuracy,
            "accuracy": metrics["accuracy"],
            "runtime": report_json.get("runtime") or metrics.get("runtime"),
            "train_min": trained.train_seconds / 60,
            "probabilities": probabilities,
        }
        print(f"{side}: validation {trained.best_validation_accuracy:.4f}, dev {metrics['accuracy']:.4f}", flush=True)

    from bertops.data.prepare import load_prepared

    frames, _, _ = load_prepared(config, root)
    gold = frames["eval"]["label"].to_numpy()
    right = {side: results[side]["probabilities"].argmax(axis=1) == gold for side in results}
    paired = compare(right["tuned"], right["defaults"])
    report += [
        "## The chosen setting against the defaults, each retrained on the same sample",
        "",
        "| setting | validation (800 rows) | SST-2 dev accuracy, served | train min |",
        "| --- | ---: | ---: | ---: |",
    ]
    for side in ("defaults", "tuned"):
        r = results[side]
        report.append(f"| {side} | {r['validation']:.4f} | {r['accuracy']:.4f} | {r['train_min']:.1f} |")
    report += [
        "",
        f"tuned - defaults on dev: {paired.difference:+.4f} (95% paired bootstrap CI {paired.ci_low:+.4f} to "
        f"{paired.ci_high:+.4f}; McNemar p {paired.mcnemar_p:.3f}; {paired.examples} sentences)",
        "",
    ]
    text = "\n".join(report)
    print(text)
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "tune_sst2.md").write_text(text)
    shutil.copy(summary.plot, out / "tune_sst2_trials.png")


if __name__ == "__main__":
    main()
