"""Is a seed ensemble worth distilling? Several fine-tunings of the default setting, differing only
in their seed, scored alone and as an ensemble (the mean of their class probabilities) on the
validation slice carved from train. The evaluation split is never read.

The SST-2 goal of issue 18 (0.91 on dev, as served) is out of reach of any one model of the shipped
encoder (bench/RESULTS.md: seeds spread 0.909-0.915 on the validation slice, which reads ~1.7
points above dev). An ensemble distilled into one model is the route left; it is worth building
only if the ensemble itself clears the bar on the validation slice, decided here before anything
is distilled. The bar, set before the first run: the ensemble of three at >= 0.925 on the slice
(0.91 on dev plus the ~1.5-1.7 points the slice reads above dev; distillation keeps part of an
ensemble's gain at best, so an ensemble below that cannot carry a distilled model to 0.91).

    python bench/seed_ensemble.py --workspace WS --member WS/models/sst2 --seeds 43 44

Each seed trains with bertops' own loop (`finetune_in_process`) on the workspace's prepared data,
into WS/models/seed-<S>/ (its reports under WS/reports/seed-<S>/), so the workspace's own model is
left alone; `--member` adds models already trained (the workspace's default run, seed 42).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _probabilities(folder: Path, frame, config) -> np.ndarray:
    import torch

    from bertops.evaluation.metrics import softmax
    from bertops.models.classifier import load_classifier
    from bertops.training.predict import predict_logits

    model, tokenizer = load_classifier(folder)
    logits = predict_logits(
        model,
        frame["input_ids"].map(list).tolist(),
        tokenizer.pad_token_id,
        config.evaluate.batch_size,
        torch.device("cpu"),
        "fp32",
        tokenizer.sep_token_id,
    )
    return softmax(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="*", default=[43, 44])
    parser.add_argument("--member", type=Path, action="append", default=[], help="a model already trained")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every seed")
    args = parser.parse_args()

    from bench._common import save_result
    from bertops.config import load_config
    from bertops.data.prepare import load_prepared
    from bertops.training.finetune import finetune_in_process

    root = args.workspace.resolve()
    members: dict[str, Path] = {f"member:{path}": path.resolve() for path in args.member}
    trained: dict[str, dict] = {}
    for seed in args.seeds:
        overrides = [*args.overrides, f"finetune.seed={seed}", f"paths.models=models/seed-{seed}",
                     f"paths.reports=reports/seed-{seed}"]  # fmt: skip
        config = load_config(root / "params.yaml", overrides=overrides)
        started = time.perf_counter()
        result = finetune_in_process(config, root)
        trained[str(seed)] = {
            "best_validation_accuracy": result.best_validation_accuracy,
            "best_step": result.best_step,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"seed {seed}: best validation accuracy {result.best_validation_accuracy:.4f} "
              f"at step {result.best_step} ({trained[str(seed)]['seconds']} s)", flush=True)  # fmt: skip
        members[f"seed:{seed}"] = root / f"models/seed-{seed}" / config.ingest.dataset

    config = load_config(root / "params.yaml", overrides=args.overrides)
    frames, _, _ = load_prepared(config, root)
    validation = frames["validation"]
    labels = np.asarray(validation["label"])
    probabilities = {name: _probabilities(folder, validation, config) for name, folder in members.items()}
    alone = {name: float((p.argmax(-1) == labels).mean()) for name, p in probabilities.items()}
    ensembles = {}
    for size in range(2, len(members) + 1):
        for names in itertools.combinations(members, size):
            mean = np.mean([probabilities[name] for name in names], axis=0)
            ensembles[" + ".join(names)] = float((mean.argmax(-1) == labels).mean())
    for name, accuracy in alone.items():
        print(f"{accuracy:.4f}  {name}")
    for name, accuracy in ensembles.items():
        print(f"{accuracy:.4f}  ensemble {name}")
    predictions = np.stack([p.argmax(-1) for p in probabilities.values()])
    save_result(
        "seed_ensemble",
        {
            "workspace": str(root),
            "validation_rows": len(labels),
            "trained": trained,
            "alone": alone,
            "ensembles": ensembles,
            "all_members_agree": float((predictions == predictions[0]).all(0).mean()),
        },
    )


if __name__ == "__main__":
    main()
