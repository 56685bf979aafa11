"""`bertops tune` at a budget this 2-core machine can afford, then the chosen setting against the
current defaults on the evaluation split, once. SST-2 by default; a task profile with `--profile`.

1. A workspace with the corpus (SST-2: a stratified sample of train, `--train-rows`, default
   8,000; 0 = all) and a validation slice of 10% of it carved by `prepare` (~800 rows for SST-2).
   `prepare` samples before it carves, so on a sample of SST-2 the slice is mostly phrases whose
   sentence was not sampled (with whole_texts, none inside a sampled train row) but may overlap
   phrases of the same sentence; `--train-rows 0` carves whole sentences only. The eval split
   (SST-2 dev, 872; RTE dev, 277) is untouched by the search.
2. `bertops tune` with params.yaml's search space (or `--space`, JSON), `--trials` trials (the
   defaults are the first), two at a time on one core each, ASHA as params.yaml sets it (by
   default its rungs are shares of each trial's own schedule: `tune.rungs`).
3. The defaults and the chosen profile, each trained on the same data (2 cores, one at a time)
   and evaluated by the `evaluate` stage on the served runtime: accuracy on the eval split, and the
   paired bootstrap CI and McNemar's p of the difference on the same examples (skipped when the
   search chose the defaults: the same setting, the same seed, the same model).

Printed as a markdown report (and written to bench/out/tune_<dataset>.md).

    python bench/tune_search.py [--train-rows 8000] [--trials 8] [--eval-every 100]
    python bench/tune_search.py --profile configs/rte.yaml --train-rows 0 --eval-every 0 \
        --space '{"finetune.lr": {"loguniform": [5e-6, 5e-5]}, "finetune.epochs": {"choice": [2, 4, 6]}}'
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
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._common import datasets_root  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--profile", type=Path, default=None, help="a task profile, e.g. configs/rte.yaml")
    parser.add_argument("--space", default=None, help="tune.space as JSON (default: params.yaml's)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = Path(tempfile.mkdtemp(prefix="bertops-bench-tune-"))
    os.environ["BENTOML_HOME"] = str(base / "bentoml")
    root = base / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "data" / "behaviour", root / "data" / "behaviour")
    profile = str(args.profile.resolve()) if args.profile else None
    data = datasets_root()
    from bertops.config import load_config
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.stats import compare
    from bertops.training.finetune import finetune
    from bertops.tuning import markdown, tune

    dataset = load_config(REPO / "params.yaml", profile).ingest.dataset
    common = [
        f"ingest.search_paths=['{data / dataset}']",
        f"prepare.max_train_rows={args.train_rows}",
        "prepare.validation_fraction=0.1",
        f"finetune.eval_every={args.eval_every}",
        "finetune.progress=false",
        "finetune.checkpoint_every=0",
        "evaluate.embedding=null",
        "evaluate.latency_requests=20",
    ]
    os.chdir(root)
    if args.space:
        common.append(f"tune.space={json.dumps(json.loads(args.space))}")
    config = load_config("params.yaml", profile, common)
    ingest(config, root)
    validate(config, root)
    prepare(config, root)

    started = time.perf_counter()
    summary = tune(
        load_config(
            "params.yaml",
            profile,
            common + [f"tune.num_samples={args.trials}", "tune.max_concurrent=2", "tune.cpus_per_trial=1"],
        ),
        root,
    )
    search_minutes = (time.perf_counter() - started) / 60
    rows = args.train_rows or "all"
    report = [f"# bertops tune on {dataset} ({rows} train rows, {os.cpu_count()} cores)", "", markdown(summary)]
    report.append(f"\nsearch wall time: {search_minutes:.1f} min\n")

    results = {}
    sides = [("defaults", profile)]
    if summary.best_trial and not next(t for t in summary.trials if t.trial_id == summary.best_trial).defaults:
        sides.append(("tuned", summary.profile))  # over the task profile: the tuned keys win
    for side, side_profile in sides:
        overrides = common
        if side == "tuned" and profile:
            tuned = yaml.safe_load(Path(summary.profile).read_text())["finetune"]
            overrides = common + [f"finetune.{k}={json.dumps(v)}" for k, v in tuned.items()]
            side_profile = profile
        side_config = load_config("params.yaml", side_profile, overrides)
        trained = finetune(side_config, root)
        evaluate(side_config, root)
        metrics = json.loads((root / "reports" / "evaluate" / "metrics.json").read_text())
        report_json = json.loads((root / "reports" / "evaluate" / "report.json").read_text())
        probabilities = np.load(root / "reports" / "evaluate" / "arrays" / "probabilities.npy")
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
    report += [
        "## The chosen setting against the defaults, each trained on the same data",
        "",
        "| setting | validation | eval split accuracy, served | train min |",
        "| --- | ---: | ---: | ---: |",
    ]
    for side, r in results.items():
        report.append(f"| {side} | {r['validation']:.4f} | {r['accuracy']:.4f} | {r['train_min']:.1f} |")
    if "tuned" in right:
        paired = compare(right["tuned"], right["defaults"])
        report += [
            "",
            f"tuned - defaults on the eval split: {paired.difference:+.4f} (95% paired bootstrap CI "
            f"{paired.ci_low:+.4f} to {paired.ci_high:+.4f}; McNemar p {paired.mcnemar_p:.3f}; "
            f"{paired.examples} examples)",
        ]
    else:
        report += ["", "the search chose the defaults: nothing else to train"]
    report.append("")
    text = "\n".join(report)
    print(text)
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"tune_{dataset}.md").write_text(text)
    shutil.copy(summary.plot, out / f"tune_{dataset}_trials.png")


if __name__ == "__main__":
    main()
