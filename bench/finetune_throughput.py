"""Fine-tuning throughput: the bertops loop vs. a plain Hugging Face `Trainer` (the baseline).

Same model (the packaged all-MiniLM-L6-v2 encoder + a classification head), same SST-2 train
rows, batch size and max length, same number of optimizer steps. The Trainer uses its defaults:
random sampling and dynamic padding to the longest row of each batch (DataCollatorWithPadding).
Throughput counts real (non-pad) tokens per second of training. Prints the ratio.

    python bench/finetune_throughput.py [--steps 300] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bertops_loop(root: Path, steps: int, batch_size: int, datasets: Path) -> dict:
    from bertops.config import load_config
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.training.finetune import finetune

    cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            f"ingest.search_paths=['{datasets / 'sst2'}']",
            f"finetune.max_steps={steps}",
            f"finetune.batch_size={batch_size}",
            "finetune.eval_every=0",
            "finetune.progress=false",
            "prepare.validation_fraction=0.01",
        ],
    )
    ingest(cfg, root)
    validate(cfg, root)
    prepare(cfg, root)
    started = time.perf_counter()
    result = finetune(cfg, root)
    return {
        "tokens_per_second": result.tokens_per_second,
        "padding_share": result.padding_share,
        "steps": result.steps,
        "max_length": cfg.prepare.max_length,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def bertops_on_ray(root: Path, steps: int, batch_size: int, datasets: Path) -> dict:
    """The same loop as one Ray Train worker (TorchTrainer, local Ray started and stopped here)."""
    from bertops.config import load_config
    from bertops.training.finetune import finetune

    cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            f"ingest.search_paths=['{datasets / 'sst2'}']",
            f"finetune.max_steps={steps}",
            f"finetune.batch_size={batch_size}",
            "finetune.eval_every=0",
            "finetune.progress=false",
            "prepare.validation_fraction=0.01",
            "finetune.num_workers=1",
        ],
    )
    started = time.perf_counter()
    result = finetune(cfg, root)
    return {
        "tokens_per_second": result.tokens_per_second,
        "steps": result.steps,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def trainer_baseline(root: Path, steps: int, batch_size: int, max_length: int) -> dict:
    import pandas as pd
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from bertops.models.pretrained import resolve_model_source

    hf_logging.set_verbosity_error()
    source = resolve_model_source("packaged")
    tokenizer = AutoTokenizer.from_pretrained(source)
    train = pd.read_parquet(root / "data/prepared/sst2/train.parquet")  # the very same rows
    encoded = tokenizer(train["text"].tolist(), truncation=True, max_length=max_length)
    dataset = Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": train["label"].tolist(),
        }
    )
    collator = DataCollatorWithPadding(tokenizer)
    counted = {"real": 0, "fed": 0}

    def counting_collator(features):
        batch = collator(features)
        counted["real"] += int(batch["attention_mask"].sum())
        counted["fed"] += batch["attention_mask"].numel()
        return batch

    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, attn_implementation="sdpa")
    args = TrainingArguments(
        output_dir=str(root / "trainer"),
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=1e-4,
        warmup_steps=int(0.06 * steps),
        weight_decay=0.01,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=42,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=counting_collator, processing_class=tokenizer
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        "tokens_per_second": round(counted["real"] / seconds, 1),
        "padding_share": round(1 - counted["real"] / counted["fed"], 4),
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--ray",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the loop as one Ray Train worker and report Ray's overhead",
    )
    parser.add_argument(
        "--datasets", type=Path, default=Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared/datasets"))
    )
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours = bertops_loop(root, args.steps, args.batch_size, args.datasets)
        on_ray = bertops_on_ray(root, args.steps, args.batch_size, args.datasets) if args.ray else None
        base = trainer_baseline(root, args.steps, args.batch_size, ours["max_length"])
    ratio = ours["tokens_per_second"] / base["tokens_per_second"]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}"
    )
    print(
        json.dumps(
            {
                "machine": machine,
                "bertops": ours,
                "bertops_ray_1_worker": on_ray,
                "hf_trainer": base,
                "ratio": round(ratio, 2),
            },
            indent=2,
        )
    )
    print(
        f"finetune throughput: bertops {ours['tokens_per_second']:.0f} tok/s vs HF Trainer "
        f"{base['tokens_per_second']:.0f} tok/s -> ratio {ratio:.2f}x (goal >= 2x)"
    )
    if on_ray:
        print(
            f"on Ray (1 worker): {on_ray['tokens_per_second']:.0f} tok/s in the loop "
            f"({on_ray['tokens_per_second'] / ours['tokens_per_second']:.2f}x the bare loop; vs HF Trainer "
            f"{on_ray['tokens_per_second'] / base['tokens_per_second']:.2f}x), wall {on_ray['wall_seconds']} s vs "
            f"{ours['wall_seconds']} s bare: Ray start-up and worker set-up cost "
            f"{on_ray['wall_seconds'] - ours['wall_seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
