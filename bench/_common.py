"""Helpers shared by the benchmarks in bench/: the machine's fp32 matmul peak and summary statistics.

Imported by the scripts as `bench._common` (they put the repository root on sys.path).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def matmul_peak_gflops(size: int = 1024, seconds: float = 3.0, rounds: int = 1) -> float:
    """This machine's fp32 matmul rate in GFLOP/s: square `size` x `size` torch matmuls on all of
    torch's threads (its default: one per core), counted as 2 * size**3 FLOPs each. The time is
    split into `rounds` windows of `seconds / rounds` and the best window's rate is returned
    (`rounds=1`: the mean rate over `seconds`, as bench/endpoint.py has always measured it)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(rounds):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / rounds:
            a @ b
            count += 1
        best = max(best, 2 * size**3 * count / (time.perf_counter() - started) / 1e9)
    return best


def spread(values: list[float], digits: int = 1) -> dict:
    """{"median", "min", "max", "runs"}: the summary of repeated measurements of one figure."""
    return {
        "median": round(float(np.median(values)), digits),
        "min": round(float(min(values)), digits),
        "max": round(float(max(values)), digits),
        "runs": [round(float(v), digits) for v in values],
    }


def save_result(name: str, result: dict) -> Path:
    """Print a benchmark's raw result and write it to bench/out/<name>.json."""
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def datasets_root() -> Path:
    """The shared datasets: $BERTOPS_DATASETS, else ../shared/datasets beside the repository."""
    repo = Path(__file__).resolve().parents[1]
    for candidate in (os.environ.get("BERTOPS_DATASETS"), repo.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "sst2" / "train.tsv").is_file():
            return Path(candidate)
    sys.exit("needs the SST-2 corpus: set BERTOPS_DATASETS to the folder holding sst2/")


def sst2_train_sample(n: int) -> list[str]:
    """A seeded sample of `n` SST-2 **train** sentences (benchmarks of the serving runtimes; the eval
    split stays unread)."""
    import pandas as pd

    return pd.read_csv(datasets_root() / "sst2" / "train.tsv", sep="\t")["sentence"].sample(n, random_state=0).tolist()


def onnx_feeds(tokenizer, batch: list[str]) -> dict:
    """The exported encoder's inputs for `batch`, padded to its longest text (at most 128 tokens)."""
    enc = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
