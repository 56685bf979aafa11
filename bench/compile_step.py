"""Does `torch.compile` speed up the fine-tuning step on this CPU? Eager vs compiled, same model.

The packaged all-MiniLM-L6-v2 encoder with the mean-pooling classification head, one training
step (forward, cross-entropy, backward, fused AdamW step) on batches of 32 SST-2-like rows of a
fixed length (what a length bucket feeds the loop), timed after warm-up (the compiled side's
compilation excluded and reported apart), in alternating rounds; median steps/s and the ratio.

    python bench/compile_step.py [--length 32] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import torch

    from bench._common import spread
    from bertops.models.classifier import build_classifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch_size, args.length))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    labels = torch.randint(0, 2, (args.batch_size,))

    def make(compiled: bool):
        model = build_classifier("packaged", "mean", {0: "negative", 1: "positive"}, 0.1).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

        def step():
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        fn = torch.compile(step) if compiled else step
        started = time.perf_counter()
        for _ in range(3):  # warm-up; for the compiled side this includes compilation
            fn()
        return fn, time.perf_counter() - started

    sides = {"eager": make(False), "compiled": make(True)}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            fn = sides[name][0]
            started = time.perf_counter()
            for _ in range(args.steps):
                fn()
            rates[name].append(args.steps / (time.perf_counter() - started))
    result = {
        "length": args.length,
        "batch_size": args.batch_size,
        "warmup_seconds": {name: round(v[1], 1) for name, v in sides.items()},
        "steps_per_s": {name: spread(v, digits=3) for name, v in rates.items()},
    }
    result["compiled_vs_eager"] = round(
        result["steps_per_s"]["compiled"]["median"] / result["steps_per_s"]["eager"]["median"], 3
    )
    from bench._common import save_result

    save_result("compile_step", result)


if __name__ == "__main__":
    main()
