"""Distillation trade-off: a distilled student vs its teacher on SST-2 dev, accuracy and serving throughput.

Both models are scored on the same prepared eval split, then timed on the CPU serving path
(the runtime the endpoint uses: ONNX Runtime int8, exported and checked as `bertops package`
does; plus PyTorch fp32 for reference) in the same run: requests of one text (latency) and
batches of 32 (throughput). Prints accuracy ratio and speed-up; the goal (DistilBERT's
trade-off) is >= 97% of the teacher's accuracy at >= 1.8x its throughput with at most half the layers.

Run after `bertops finetune` and `bertops distill` (defaults: models/sst2 and models/sst2-student):
    python bench/distill_tradeoff.py
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


def timed(run, items: list, repeats: int) -> float:
    """Items per second of `run(item)` over `repeats` passes (after one warm-up pass)."""
    for item in items[:5]:
        run(item)
    started = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            run(item)
    return len(items) * repeats / (time.perf_counter() - started)


def measure(model_dir: Path, texts: list[str], labels: np.ndarray, max_length: int, workdir: Path) -> dict:
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
    batches = [texts[i:i + 32] for i in range(0, 320, 32)]

    def ort_call(batch: list[str]):
        feeds = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        session.run(["logits"], {k: feeds[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})

    def torch_call(batch: list[str]):
        feeds = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            model(**feeds)

    return {
        "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "accuracy_torch": round(float((reference.argmax(-1) == labels).mean()), 4),
        "accuracy_onnx_int8": round(float((int8.argmax(-1) == labels).mean()), 4),
        "onnx_int8_requests_per_s": round(timed(lambda t: ort_call([t]), singles, 3), 1),
        "onnx_int8_texts_per_s_batch32": round(timed(ort_call, batches, 3) * 32, 1),
        "torch_requests_per_s": round(timed(lambda t: torch_call([t]), singles, 3), 1),
        "torch_texts_per_s_batch32": round(timed(torch_call, batches, 3) * 32, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=REPO / "models/sst2")
    parser.add_argument("--student", type=Path, default=REPO / "models/sst2-student")
    parser.add_argument("--prepared", type=Path, default=REPO / "data/prepared/sst2")
    args = parser.parse_args()
    import pandas as pd
    import torch

    evals = pd.read_parquet(args.prepared / "eval.parquet")
    texts, labels = evals["text"].tolist(), evals["label"].to_numpy()
    max_length = json.loads((args.prepared / "meta.json").read_text())["max_length"]
    with tempfile.TemporaryDirectory(prefix="bertops-bench-") as tmp:
        teacher = measure(args.teacher, texts, labels, max_length, Path(tmp))
        student = measure(args.student, texts, labels, max_length, Path(tmp))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, cpu",
        "eval_examples": len(texts), "teacher": teacher, "student": student,
        "accuracy_ratio": round(student["accuracy_onnx_int8"] / teacher["accuracy_onnx_int8"], 4),
        "accuracy_ratio_torch": round(student["accuracy_torch"] / teacher["accuracy_torch"], 4),
        "speedup_requests": round(student["onnx_int8_requests_per_s"] / teacher["onnx_int8_requests_per_s"], 2),
        "speedup_batch32": round(student["onnx_int8_texts_per_s_batch32"] / teacher["onnx_int8_texts_per_s_batch32"], 2),
        "speedup_torch_requests": round(student["torch_requests_per_s"] / teacher["torch_requests_per_s"], 2),
    }
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "distill_tradeoff.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"student ({student['layers']} of {teacher['layers']} layers): {result['accuracy_ratio']:.1%} of the teacher's "
          f"accuracy ({student['accuracy_onnx_int8']} vs {teacher['accuracy_onnx_int8']}, ONNX int8), "
          f"{result['speedup_requests']}x its requests/s and {result['speedup_batch32']}x its batch-32 throughput "
          f"on the serving runtime (goal: >= 97% at >= 1.8x)")


if __name__ == "__main__":
    main()
