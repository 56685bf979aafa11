"""Fine-tuning that keeps the sentence space: classifier accuracy and retrieval recall@1 side by side
for a few weights of `finetune.embedding_preservation`.

For each weight, SST-2 is fine-tuned from the packaged all-MiniLM-L6-v2 on the same prepared
sample (same rows, same seed), then `bertops evaluate` scores it with
`serve.embedding_model: production`, so that /embed's model is the fine-tuned model's own encoder:
- accuracy on the SST-2 dev split, on the runtime that would be served (ONNX int8 when it passes
  its check), and the validation-slice accuracy the checkpoint was chosen on;
- question -> paragraph retrieval on 400 SQuAD v1.1 dev paragraphs (recall@1, MRR) of the model's
  own encoder on its served runtime, beside the parent encoder (PyTorch fp32) on the same questions;
- the training time (the term costs one forward pass of the frozen parent per batch).
Pick a weight on the validation accuracy and the retrieval figures, never on the dev accuracy.

    python bench/embedding_preservation.py [--weights 0 0.5 2 8] [--train-rows 8000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 2.0, 8.0])
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--paragraphs", type=int, default=400)
    args = parser.parse_args()

    from bench._common import save_result
    from bertops.config import load_config
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.training.finetune import finetune

    datasets = Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared" / "datasets"))
    base = [
        f"ingest.search_paths=['{datasets / 'sst2'}']",
        f"evaluate.behaviour={REPO / 'data' / 'behaviour' / 'sst2.yaml'}",
        f"evaluate.embedding.retrieval.search_paths=['{datasets / 'squad-v1.1'}']",
        f"evaluate.embedding.retrieval.paragraphs={args.paragraphs}",
        f"prepare.max_train_rows={args.train_rows}",
        f"finetune.epochs={args.epochs}",
        "finetune.progress=false",
        "finetune.checkpoint_every=0",
        "serve.embedding_model=production",
        "evaluate.latency_requests=20",
    ]
    work = Path(tempfile.mkdtemp(prefix="bertops-preserve-"))
    started = time.perf_counter()
    shared = work / "data-only"
    config = load_config(REPO / "params.yaml", overrides=base)
    ingest(config, shared)
    validate(config, shared)
    prepare(config, shared)
    runs = []
    for weight in args.weights:
        root = work / f"w{weight}"
        shutil.copytree(shared, root)
        config = load_config(REPO / "params.yaml", overrides=[*base, f"finetune.embedding_preservation={weight}"])
        trained = finetune(config, root)
        report = evaluate(config, root)
        embedding = report["embedding"]
        parent = embedding["versus"]["parent"]["retrieval"]
        run = {
            "weight": weight,
            "validation_accuracy": trained.best_validation_accuracy,
            "dev_accuracy": report["accuracy"],
            "served_runtime": report["serving"]["runtime"],
            "embedding_runtime": embedding["runtime"],
            "recall@1": embedding["retrieval"]["recall@1"],
            "mrr": embedding["retrieval"]["mrr"],
            "parent_recall@1": parent["recall@1"],
            "recall@1_vs_parent": parent["recall@1_difference"],
            "train_seconds": trained.train_seconds,
        }
        runs.append(run)
        print(f"weight {weight}: dev accuracy {run['dev_accuracy']:.4f}, recall@1 {run['recall@1']:.4f} "
              f"(parent {run['parent_recall@1']:.4f}), {run['train_seconds']:.0f} s", flush=True)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    save_result(
        "embedding_preservation",
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "train_rows": args.train_rows,
            "epochs": args.epochs,
            "paragraphs": args.paragraphs,
            "runs": runs,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
