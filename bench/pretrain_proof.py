"""Does bertops pretraining work? A BERT pretrained by bertops on WikiText-2, then fine-tuned on
SST-2, against the same architecture fine-tuned from random initialisation (the baseline).

Both use the same tokenizer (the one pretraining trained), the same SST-2 data, head, and
fine-tuning settings; only the starting weights differ.

    python bench/pretrain_proof.py [--pretrained models/pretrained/wikitext2-mini] [--epochs 2]

Without --pretrained it pretrains first with params.yaml's `pretrain` section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def finetune_from(model_dir: Path, root: Path, datasets: Path, epochs: int, pooling: str) -> dict:
    from bertops.config import load_config
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.training.finetune import finetune

    cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            f"ingest.search_paths=['{datasets / 'sst2'}']",
            f"finetune.model={model_dir}",
            f"finetune.pooling={pooling}",
            f"finetune.epochs={epochs}",
            "finetune.progress=false",
            "finetune.checkpoint_every=0",
            f"evaluate.behaviour={REPO / 'data' / 'behaviour' / 'sst2.yaml'}",
            "evaluate.latency_requests=20",
        ],
    )
    ingest(cfg, root)
    validate(cfg, root)
    prepare(cfg, root)
    started = time.perf_counter()
    result = finetune(cfg, root)
    metrics = evaluate(cfg, root)
    return {
        "sst2_dev_accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "best_validation_accuracy": result.best_validation_accuracy,
        "finetune_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrained", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pooling", default="cls")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from bertops.config import load_config
    from bertops.pretraining.model import build_pretraining_model

    datasets = Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared" / "datasets"))
    pretrained = args.pretrained
    pretrain_metrics = None
    with tempfile.TemporaryDirectory(prefix="bertops-proof-") as tmp:
        tmp = Path(tmp)
        if pretrained is None:
            from bertops.pretraining.run import pretrain

            cfg = load_config(
                REPO / "params.yaml",
                overrides=[f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']", "pretrain.progress=false"],
            )
            pretrain_metrics = pretrain(cfg, tmp / "pre")
            pretrained = tmp / "pre" / "models" / "pretrained" / cfg.pretrain.name
        lineage = json.loads((pretrained / "lineage.json").read_text())
        pretrain_metrics = pretrain_metrics or lineage["metrics"]
        # The baseline: the same shape and tokenizer, random weights.
        tokenizer = AutoTokenizer.from_pretrained(pretrained)
        random_dir = tmp / "random-init"
        build_pretraining_model(
            lineage["params"]["model"], None, tokenizer.vocab_size, lineage["params"]["max_length"]
        ).save_pretrained(random_dir)
        tokenizer.save_pretrained(random_dir)
        results = {
            "pretrained": finetune_from(pretrained, tmp / "ft-pre", datasets, args.epochs, args.pooling),
            "random_init": finetune_from(random_dir, tmp / "ft-rand", datasets, args.epochs, args.pooling),
        }
    gain = results["pretrained"]["sst2_dev_accuracy"] - results["random_init"]["sst2_dev_accuracy"]
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "pretraining": {
            k: pretrain_metrics.get(k)
            for k in (
                "steps",
                "preset",
                "parameters",
                "train_seconds",
                "heldout_mlm_accuracy",
                "heldout_mlm_perplexity",
                "heldout_nsp_accuracy",
            )
        },
        "finetune_epochs": args.epochs,
        "pooling": args.pooling,
        **results,
        "gain_points": round(100 * gain, 2),
    }
    (REPO / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "out" / "pretrain_proof.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(
        f"\nSST-2 dev: pretrained {results['pretrained']['sst2_dev_accuracy']:.4f} vs random init "
        f"{results['random_init']['sst2_dev_accuracy']:.4f}: {100 * gain:+.2f} points"
    )


if __name__ == "__main__":
    main()
