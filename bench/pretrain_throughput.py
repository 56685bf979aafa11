"""Pretraining throughput: the bertops loop vs. Hugging Face `BertForPreTraining` +
`DataCollatorForLanguageModeling` + `Trainer` (the baseline), in the same run.

Same model shape (a preset, fresh weights), same NSP examples (bertops' prepared WikiText-2
corpus), same sequence length, batch size and number of optimizer steps. The baseline uses
the stock model (MLM decoder over every token) and the stock collator (padding to the longest
example, random masking), random sampling. Throughput counts real (non-pad) tokens per second.

    python bench/pretrain_throughput.py [--steps 60] [--preset mini] [--batch-size 32]
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


def config(root: Path, preset: str, steps: int, batch_size: int):
    from bertops.config import load_config

    datasets = Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared" / "datasets"))
    return load_config(
        REPO / "params.yaml",
        overrides=[
            f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']",
            f"pretrain.model={preset}",
            f"pretrain.steps={steps}",
            f"pretrain.batch_size={batch_size}",
            "pretrain.log_every=1000000",
            "pretrain.checkpoint_every=0",
            "pretrain.progress=false",
            f"pretrain.name=bench-{preset}",
        ],
    )


def bertops_run(cfg, root: Path) -> dict:
    from bertops.pretraining.run import pretrain

    started = time.perf_counter()
    metrics = pretrain(cfg, root)
    return {
        "seconds": time.perf_counter() - started,
        "train_seconds": metrics["train_seconds"],
        "tokens_per_second": metrics["last"]["tokens_per_second"],
        "parameters": metrics["parameters"],
    }


def trainer_baseline(cfg, root: Path) -> dict:
    import pandas as pd
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from bertops.pretraining.model import build_pretraining_model

    hf_logging.set_verbosity_error()
    data_dir = root / cfg.paths.pretrain_data / cfg.pretrain.name
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    frame = pd.read_parquet(data_dir / "train.parquet")
    rows = {"input_ids": [], "token_type_ids": [], "next_sentence_label": []}
    for a, b, nxt in zip(frame["a"], frame["b"], frame["is_next"]):
        a, b = list(a), list(b)
        rows["input_ids"].append([tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id])
        rows["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
        rows["next_sentence_label"].append(int(nxt))
    dataset = Dataset.from_dict(rows)
    torch.manual_seed(cfg.pretrain.seed)
    model = build_pretraining_model(cfg.pretrain.model, None, tokenizer.vocab_size, cfg.pretrain.max_length)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=cfg.pretrain.mask_prob)
    real_tokens = [0]

    def counting(examples):  # the stock collator, counting the real tokens it hands to the model
        batch = collator(examples)
        real_tokens[0] += int(batch["attention_mask"].sum())
        return batch

    args = TrainingArguments(
        output_dir=str(root / "trainer"),
        per_device_train_batch_size=cfg.pretrain.batch_size,
        max_steps=cfg.pretrain.steps,
        learning_rate=cfg.pretrain.lr,
        weight_decay=cfg.pretrain.weight_decay,
        warmup_steps=int(cfg.pretrain.warmup_ratio * cfg.pretrain.steps),
        max_grad_norm=cfg.pretrain.max_grad_norm,
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=cfg.pretrain.seed,
        disable_tqdm=True,
        optim="adamw_torch_fused",
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=counting, processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens_per_second": real_tokens[0] / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="bertops-bench-") as tmp:
        root = Path(tmp)
        cfg = config(root, args.preset, args.steps, args.batch_size)
        from bertops.pretraining.run import prepare_pretraining

        prepare_pretraining(cfg, root)
        ours = bertops_run(cfg, root)
        baseline = trainer_baseline(cfg, root)
    ratio = ours["tokens_per_second"] / baseline["tokens_per_second"]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "preset": args.preset,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": cfg.pretrain.max_length,
        "bertops": ours,
        "hf_trainer": baseline,
        "ratio": round(ratio, 2),
    }
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrain_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"\nbertops {ours['tokens_per_second']:.0f} tok/s vs HF Trainer {baseline['tokens_per_second']:.0f} tok/s: "
        f"{ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
