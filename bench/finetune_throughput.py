"""Fine-tuning throughput: the bertops loop vs. a plain Hugging Face `Trainer` at two settings.

Same model (the packaged all-MiniLM-L6-v2 encoder + a classification head), same SST-2 train
rows, batch size and max length, same number of optimizer steps. Two Trainer baselines, both with
dynamic padding to the longest row of each batch (DataCollatorWithPadding) and fused AdamW:

- `trainer_random`: its defaults (`train_sampling_strategy="random"`);
- `trainer_group_by_length`: its faster setting, `train_sampling_strategy="group_by_length"`
  (transformers 5 name; `LengthGroupedSampler`: megabatches of 50 batches sorted by length). The
  lengths are computed by the Trainer from `input_ids` when it builds its dataloader (it drops an
  unused `length` column before the sampler sees it), which is outside the timed span below.

Throughput counts real (non-pad) tokens per second of training. bertops times its own loop (from
the optimizer built to the last step, evaluation excluded); the Trainer is timed from
`on_train_begin` to the last `on_step_end` (a callback: model loading, dataloader and sampler set-up,
optimizer creation and the final metrics are outside), its real tokens counted in the batches that
reach the model's forward (a pre-hook), not those the collator made.

The three sides run in `--repeats` rounds (default 3), the order rotating each round (round r starts
with side r mod 3), so that a slow spell of the machine does not land on one side only. Per side:
the median tokens/s and the spread (min-max) over the rounds; ratios of bertops to each Trainer
setting are ratios of the medians.

Compute efficiency: useful training FLOPs per real token = 6 * N + 12 * L * d * E[n^2] / E[n],
with N the encoder's non-embedding parameters (the 6 layers: 10.6 M; embeddings and the
per-sequence pooler/classifier head left out), L layers, d hidden size and n the real length of a
training row (truncated at max length) averaged over the train rows: 6N for the dense layers
forward and backward, the second term for attention scores and weighted values (2 matmuls,
2 * 2 * n * d FLOPs per token and layer forward, x3 with backward; PaLM's MFU formula). Pad tokens
are not useful work and are not counted. Peak: this machine's fp32 torch matmul rate (2048 x 2048,
all of torch's threads, best 0.6 s window of 3 s), measured at the start of every round; each
side's fraction is of the best of those.

The Ray figure (the same loop as one Ray Train worker, `--ray`) is a single run after the rounds,
compared with the median of the bare loop.

    python bench/finetune_throughput.py [--steps 300] [--batch-size 32] [--repeats 3] [--no-ray]
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

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIDES = ("bertops", "trainer_random", "trainer_group_by_length")


def bertops_config(steps: int, batch_size: int, datasets: Path, *extra: str):
    from bertops.config import load_config

    return load_config(
        REPO / "params.yaml",
        overrides=[
            f"ingest.search_paths=['{datasets / 'sst2'}']",
            f"finetune.max_steps={steps}",
            f"finetune.batch_size={batch_size}",
            "finetune.eval_every=0",
            "finetune.progress=false",
            "prepare.validation_fraction=0.01",
            *extra,
        ],
    )


def bertops_prepare(root: Path, steps: int, batch_size: int, datasets: Path):
    """ingest -> validate -> prepare once into `root`; returns the config the loop runs with."""
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate

    cfg = bertops_config(steps, batch_size, datasets)
    ingest(cfg, root)
    validate(cfg, root)
    prepare(cfg, root)
    return cfg


def bertops_loop(cfg, root: Path) -> dict:
    from bertops.training.finetune import finetune

    started = time.perf_counter()
    result = finetune(cfg, root)
    return {
        "tokens_per_second": result.tokens_per_second,
        "padding_share": result.padding_share,
        "steps": result.steps,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def bertops_on_ray(root: Path, steps: int, batch_size: int, datasets: Path) -> dict:
    """The same loop as one Ray Train worker (TorchTrainer, local Ray started and stopped here)."""
    from bertops.training.finetune import finetune

    cfg = bertops_config(steps, batch_size, datasets, "finetune.num_workers=1")
    started = time.perf_counter()
    result = finetune(cfg, root)
    return {
        "tokens_per_second": result.tokens_per_second,
        "steps": result.steps,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def trainer_data(root: Path, max_length: int) -> dict:
    """The prepared train rows (the very same rows bertops trains on), tokenised once for the
    Trainer runs, and the figures the FLOPs count needs."""
    import pandas as pd
    from datasets import Dataset
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from bertops.models.pretrained import resolve_model_source

    source = resolve_model_source("packaged")
    tokenizer = AutoTokenizer.from_pretrained(source)
    train = pd.read_parquet(root / "data/prepared/sst2/train.parquet")
    encoded = tokenizer(train["text"].tolist(), truncation=True, max_length=max_length)
    dataset = Dataset.from_dict(
        {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": train["label"].tolist(),
        }
    )
    config = AutoConfig.from_pretrained(source)
    encoder = AutoModel.from_pretrained(source)
    non_embedding = sum(p.numel() for name, p in encoder.named_parameters() if name.startswith("encoder."))
    lengths = np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.float64)
    return {
        "source": source,
        "tokenizer": tokenizer,
        "dataset": dataset,
        "non_embedding_params": int(non_embedding),
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "mean_length": float(lengths.mean()),
        "length_sq_over_length": float((lengths**2).sum() / lengths.sum()),
    }


def train_flops_per_token(data: dict) -> float:
    """Useful training FLOPs per real token: 6 N + 12 L d E[n^2]/E[n] (see the module docstring)."""
    return 6 * data["non_embedding_params"] + 12 * data["layers"] * data["hidden"] * data["length_sq_over_length"]


def trainer_baseline(root: Path, data: dict, steps: int, batch_size: int, strategy: str) -> dict:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    counted = {"real": 0, "fed": 0}
    span: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            span["begin"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            span["end"] = time.perf_counter()

    model = AutoModelForSequenceClassification.from_pretrained(data["source"], num_labels=2, attn_implementation="sdpa")

    def count(module, args, kwargs):  # the batches that reach the model, padded as fed
        mask = kwargs.get("attention_mask")
        if mask is not None and module.training:
            counted["real"] += int(mask.sum())
            counted["fed"] += mask.numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    args = TrainingArguments(
        output_dir=str(root / "trainer"),
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=1e-4,
        warmup_steps=int(0.06 * steps),
        weight_decay=0.01,
        train_sampling_strategy=strategy,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=42,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["dataset"],
        data_collator=DataCollatorWithPadding(data["tokenizer"]),
        processing_class=data["tokenizer"],
        callbacks=[Clock()],
    )
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    seconds = span["end"] - span["begin"]
    return {
        "tokens_per_second": round(counted["real"] / seconds, 1),
        "padding_share": round(1 - counted["real"] / counted["fed"], 4),
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "wall_seconds": round(wall, 1),
    }


def summarise(runs: list[dict], flops_per_token: float, peak_gflops: float) -> dict:
    from bench._common import spread

    rates = [r["tokens_per_second"] for r in runs]
    median = float(np.median(rates))
    return {
        "tokens_per_second": round(median, 1),
        "tokens_per_second_spread": spread(rates),
        "padding_share": float(np.median([r["padding_share"] for r in runs])),
        "steps": runs[0]["steps"],
        "wall_seconds": float(np.median([r["wall_seconds"] for r in runs])),
        "achieved_gflops": round(median * flops_per_token / 1e9, 2),
        "fraction_of_peak": round(median * flops_per_token / 1e9 / peak_gflops, 4),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three sides, order rotating")
    parser.add_argument(
        "--ray",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the loop once as one Ray Train worker and report Ray's overhead",
    )
    parser.add_argument(
        "--datasets", type=Path, default=Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared/datasets"))
    )
    args = parser.parse_args()
    import torch

    from bench._common import matmul_peak_gflops, spread

    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    orders, peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = bertops_prepare(root, args.steps, args.batch_size, args.datasets)
        max_length = cfg.prepare.max_length
        data = trainer_data(root, max_length)
        flops_per_token = train_flops_per_token(data)
        side_runs = {
            "bertops": lambda: bertops_loop(cfg, root),
            "trainer_random": lambda: trainer_baseline(root, data, args.steps, args.batch_size, "random"),
            "trainer_group_by_length": lambda: trainer_baseline(
                root, data, args.steps, args.batch_size, "group_by_length"
            ),
        }
        for round_ in range(args.repeats):
            order = list(SIDES[round_ % len(SIDES) :] + SIDES[: round_ % len(SIDES)])
            orders.append(order)
            peaks.append(round(matmul_peak_gflops(size=2048, seconds=3.0, rounds=5), 1))
            print(f"round {round_ + 1}/{args.repeats}: peak {peaks[-1]} GFLOP/s; order {order}", flush=True)
            for side in order:
                runs[side].append(side_runs[side]())
                print(f"   {side}: {runs[side][-1]}", flush=True)
        on_ray = bertops_on_ray(root, args.steps, args.batch_size, args.datasets) if args.ray else None
    peak = max(peaks)
    sides = {side: summarise(runs[side], flops_per_token, peak) for side in SIDES}
    ours, base, grouped = sides["bertops"], sides["trainer_random"], sides["trainer_group_by_length"]
    ratio = ours["tokens_per_second"] / base["tokens_per_second"]
    ratio_grouped = ours["tokens_per_second"] / grouped["tokens_per_second"]
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}"
    )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": max_length,
        "repeats": args.repeats,
        "orders": orders,
        "fp32_matmul_peak_gflops": peak,
        "fp32_matmul_peak_gflops_per_round": peaks,
        "fp32_matmul_peak_gflops_spread": spread(peaks),
        "flops_per_real_token": {
            "formula": "6 * N_non_embedding + 12 * layers * hidden * sum(n^2) / sum(n) over the train rows",
            "non_embedding_params": data["non_embedding_params"],
            "layers": data["layers"],
            "hidden": data["hidden"],
            "mean_row_length": round(data["mean_length"], 2),
            "sum_n2_over_sum_n": round(data["length_sq_over_length"], 2),
            "flops": round(flops_per_token),
        },
        "bertops": ours,
        "bertops_ray_1_worker": on_ray,
        "hf_trainer": base,  # random sampling (the Trainer's default), as in earlier runs
        "hf_trainer_group_by_length": grouped,
        "ratio": round(ratio, 2),  # bertops / Trainer random (medians)
        "ratio_group_by_length": round(ratio_grouped, 2),  # bertops / Trainer group_by_length (medians)
    }
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))

    def line(name: str, side: dict) -> str:
        s = side["tokens_per_second_spread"]
        return (
            f"  {name:<28} {s['median']:>8.0f} tok/s (min-max {s['min']:.0f}-{s['max']:.0f}), padding "
            f"{side['padding_share']:.1%}, {side['achieved_gflops']:.1f} GFLOP/s = {side['fraction_of_peak']:.1%} "
            f"of the fp32 matmul peak"
        )

    print(
        f"\nfinetune throughput, median of {args.repeats} rounds (order rotating), fp32 matmul peak {peak} GFLOP/s "
        f"(rounds: {peaks}), {flops_per_token / 1e6:.1f} MFLOP per real token:"
    )
    print(line("bertops", ours))
    print(line("HF Trainer, random", base))
    print(line("HF Trainer, group_by_length", grouped))
    print(
        f"bertops / HF Trainer random: {ratio:.2f}x; bertops / HF Trainer group_by_length: {ratio_grouped:.2f}x "
        f"(goal >= 2x)"
    )
    if on_ray:
        print(
            f"on Ray (1 worker, one run): {on_ray['tokens_per_second']:.0f} tok/s in the loop "
            f"({on_ray['tokens_per_second'] / ours['tokens_per_second']:.2f}x the bare loop's median; vs HF Trainer "
            f"random {on_ray['tokens_per_second'] / base['tokens_per_second']:.2f}x, group_by_length "
            f"{on_ray['tokens_per_second'] / grouped['tokens_per_second']:.2f}x), wall {on_ray['wall_seconds']} s vs "
            f"{ours['wall_seconds']} s bare (median): Ray start-up and worker set-up cost "
            f"{on_ray['wall_seconds'] - ours['wall_seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
