"""Distillation trade-off: a distilled student vs its teacher on SST-2 dev, accuracy and serving throughput.

Both models are scored on the same prepared eval split, then timed on the CPU serving path
(the runtime the endpoint uses: ONNX Runtime int8, exported and checked as `bertops package`
does; plus PyTorch fp32 for reference) in the same run: requests of one text (latency) and
batches of 32 (throughput). The two models are timed in `--repeats` rounds (default 3); each round
times every figure of both models once, teacher and student in an order drawn at random per round
(seeded: `--seed`, default 2, whose first three rounds hold both orders; the orders used are
recorded in the output). Each figure is the median over the
rounds with its spread (min-max), so that a slow spell of the machine (another process, frequency
changes) lands on both models instead of biasing the ratio, and shows when it happened. Speed-ups
are ratios of the medians; their spread is that of the per-round ratios (student / teacher of the
same round). Prints accuracy ratio and speed-up; the goal (DistilBERT's trade-off) is >= 97% of the
teacher's accuracy at >= 1.8x its throughput with at most half the layers.

Run after `bertops finetune` and `bertops distill` (defaults: models/sst2 and models/sst2-student):
    python bench/distill_tradeoff.py [--repeats 3] [--seed 2]
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


def timed(run, items: list) -> float:
    """Items per second of `run(item)` over one pass (after a short warm-up)."""
    for item in items[:5]:
        run(item)
    started = time.perf_counter()
    for item in items:
        run(item)
    return len(items) / (time.perf_counter() - started)


def rounds_in_random_order(timers: dict[str, dict], rounds: int, seed: int) -> tuple[dict, list[list[str]]]:
    """({model: {figure: [one value per round]}}, the model order of each round): each round times
    every model's every figure once, the models in an order drawn from a seeded RNG."""
    rng = np.random.default_rng(seed)
    samples = {model: {figure: [] for figure in figures} for model, figures in timers.items()}
    orders = []
    for _ in range(rounds):
        order = [str(model) for model in rng.permutation(list(timers))]
        orders.append(order)
        for model in order:
            for figure, run in timers[model].items():
                samples[model][figure].append(run())
    return samples, orders


def measure(model_dir: Path, texts: list[str], labels: np.ndarray, max_length: int, workdir: Path) -> tuple[dict, dict]:
    """(accuracy and size figures, {throughput figure: a callable timing one round of it})."""
    import shutil

    import torch

    from bertops.models.classifier import load_classifier
    from bertops.models.export import FILES, export_onnx, onnx_session, quantize_int8, session_logits, torch_logits

    model, tokenizer = load_classifier(model_dir)
    reference = torch_logits(model, tokenizer, texts, max_length)
    out = workdir / model_dir.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    export_onnx(model, tokenizer, out / FILES["onnx"])
    quantize_int8(out / FILES["onnx"], out / FILES["onnx-int8"])
    session = onnx_session(out / FILES["onnx-int8"])
    int8 = session_logits(session, tokenizer, texts, max_length)

    singles = texts[:200]
    batches = [texts[i : i + 32] for i in range(0, 320, 32)]

    def ort_call(batch: list[str]):
        feeds = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        session.run(
            ["logits"], {k: feeds[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        )

    def torch_call(batch: list[str]):
        feeds = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            model(**feeds)

    figures = {
        "layers": model.config.num_hidden_layers,
        "hidden": model.config.hidden_size,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "accuracy_torch": round(float((reference.argmax(-1) == labels).mean()), 4),
        "accuracy_onnx_int8": round(float((int8.argmax(-1) == labels).mean()), 4),
    }
    timers = {
        "onnx_int8_requests_per_s": lambda: timed(lambda t: ort_call([t]), singles),
        "onnx_int8_texts_per_s_batch32": lambda: timed(ort_call, batches) * 32,
        "torch_requests_per_s": lambda: timed(lambda t: torch_call([t]), singles),
        "torch_texts_per_s_batch32": lambda: timed(torch_call, batches) * 32,
    }
    return figures, timers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=REPO / "models/sst2")
    parser.add_argument("--student", type=Path, default=REPO / "models/sst2-student")
    parser.add_argument("--prepared", type=Path, default=REPO / "data/prepared/sst2")
    parser.add_argument(
        "--repeats",
        "--rounds",
        dest="repeats",
        type=int,
        default=3,
        help="timing rounds, teacher and student in random order in each (median and min-max reported)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=2,
        help="seed of the RNG ordering each round (2: its first 3 rounds hold both orders; 0's: all teacher first)",
    )
    args = parser.parse_args()
    import pandas as pd
    import torch

    from bench._common import spread

    evals = pd.read_parquet(args.prepared / "eval.parquet")
    texts, labels = evals["text"].tolist(), evals["label"].to_numpy()
    max_length = json.loads((args.prepared / "meta.json").read_text())["max_length"]
    with tempfile.TemporaryDirectory(prefix="bertops-bench-") as tmp:
        teacher, teacher_timers = measure(args.teacher, texts, labels, max_length, Path(tmp))
        student, student_timers = measure(args.student, texts, labels, max_length, Path(tmp))
        samples, orders = rounds_in_random_order(
            {"teacher": teacher_timers, "student": student_timers}, args.repeats, args.seed
        )
    for model, figures in (("teacher", teacher), ("student", student)):
        figures.update({figure: spread(values)["median"] for figure, values in samples[model].items()})
        figures["spread"] = {figure: spread(values) for figure, values in samples[model].items()}

    def per_round(figure: str) -> dict:
        return spread([s / t for s, t in zip(samples["student"][figure], samples["teacher"][figure])], digits=2)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, cpu",
        "eval_examples": len(texts),
        "timing_rounds": args.repeats,
        "timing_seed": args.seed,
        "timing_orders": orders,
        "teacher": teacher,
        "student": student,
        "accuracy_ratio": round(student["accuracy_onnx_int8"] / teacher["accuracy_onnx_int8"], 4),
        "accuracy_ratio_torch": round(student["accuracy_torch"] / teacher["accuracy_torch"], 4),
        "speedup_requests": round(student["onnx_int8_requests_per_s"] / teacher["onnx_int8_requests_per_s"], 2),
        "speedup_batch32": round(
            student["onnx_int8_texts_per_s_batch32"] / teacher["onnx_int8_texts_per_s_batch32"], 2
        ),
        "speedup_torch_requests": round(student["torch_requests_per_s"] / teacher["torch_requests_per_s"], 2),
        "speedup_torch_batch32": round(student["torch_texts_per_s_batch32"] / teacher["torch_texts_per_s_batch32"], 2),
        "speedup_per_round": {figure: per_round(figure) for figure in samples["teacher"]},
    }
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "distill_tradeoff.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\n{args.repeats} rounds, orders {orders}; median (min-max) per figure:")
    for figure in samples["teacher"]:
        t, st, r = teacher["spread"][figure], student["spread"][figure], result["speedup_per_round"][figure]
        print(
            f"  {figure}: teacher {t['median']} ({t['min']}-{t['max']}), student {st['median']} "
            f"({st['min']}-{st['max']}), student/teacher per round {r['median']}x ({r['min']}-{r['max']})"
        )
    print(
        f"student ({student['layers']} of {teacher['layers']} layers): {result['accuracy_ratio']:.1%} of the teacher's "
        f"accuracy ({student['accuracy_onnx_int8']} vs {teacher['accuracy_onnx_int8']}, ONNX int8), "
        f"{result['speedup_requests']}x its requests/s and {result['speedup_batch32']}x its batch-32 throughput "
        f"on the serving runtime (goal: >= 97% at >= 1.8x)"
    )


if __name__ == "__main__":
    main()
