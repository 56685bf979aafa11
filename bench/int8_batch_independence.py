"""Can the int8 endpoint answer a sentence the same whatever it is batched with? Three int8 schemes
against the shipped one, chosen on the validation slice, the eval split scored once for the record.

The shipped scheme, ONNX Runtime's dynamic quantisation, quantises each MatMul's activations with
one scale per call (`DynamicQuantizeLinear` over the whole batch), so a sentence's logits depend on
the other sentences of its call and on their padding: through the endpoint 3 of SST-2's 872 dev
sentences get another label than in `evaluate`'s batches (bench/RESULTS.md). The candidates, each
answering a row from that row alone:

- `static`: activation scales calibrated once (MinMax over 256 train sentences, never the slice or
  the eval split), QDQ format, weights per channel, MatMuls only;
- `static-reduce-range`: the same with 7-bit weights, as ONNX Runtime advises for CPUs without VNNI,
  where u8 x s8 products summed in pairs can saturate 16 bits;
- `weight-only`: `MatMulNBits` 8-bit weights (blocks of 32 along K), `accuracy_level` 4 (int8
  compute where ONNX Runtime has a kernel for it; each row is quantised on its own).

Two more dynamic variants (still batch-dependent) test that saturation for the shipped scheme:
`dynamic-reduce-range` (7-bit weights) and `dynamic-u8u8` (unsigned weights). The fp32 graph
(`fp32`, what `serve.runtime: onnx` serves) is measured alongside for reference, not as a candidate.
The machine's CPU flags (AVX2, AVX-512, VNNI) are recorded with the figures.

For every scheme, on the validation slice: the sentences whose label agrees with PyTorch fp32's and
the accuracy, computed as `evaluate` computes them (`session_logits`: batches of `evaluate.batch_size`,
similar lengths together); the largest logit change from those batches and the labels that change
with one sentence a call and with random batches of 32 (the endpoint's mixes; the same mixes for
every scheme); the largest logit difference from the fp32 graph's; one-sentence p50 latency and
texts/s in batches of 32 (rounds alternate the schemes; medians and spreads).

The rule, set before the first run on a trained model: a batch-independent candidate replaces the
shipped scheme if no label changes with the batching, it agrees with fp32 on at most one sentence
fewer than the shipped scheme, and both its speeds are at least 0.9x the shipped scheme's (medians);
among several, the most agreeing. Failing that, a dynamic variant replaces it if it agrees on at
least two sentences more, at 0.9x its speeds or better. (First written as fractions of the slice,
-0.002 and +0.004; the counts say what was meant, and the first run's choice is the same under both.)
Run after `make run` (it reads models/sst2, data/prepared/sst2, params.yaml):

    python bench/int8_batch_independence.py [--model models/sst2] [--prepared data/prepared/sst2]
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

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHIPPED = "dynamic"


def quantise(scheme: str, fp32: Path, target: Path, tokenizer, calibration: list[str], max_length: int) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from bertops.models.export import model_feeds, quantize_int8

    if scheme == "fp32":
        shutil.copyfile(fp32, target)
    elif scheme == SHIPPED:
        quantize_int8(fp32, target)  # what evaluate exports
    elif scheme.startswith("dynamic"):
        quantize_dynamic(
            str(fp32), str(target), per_channel=True, reduce_range=scheme == "dynamic-reduce-range",
            weight_type=QuantType.QUInt8 if scheme == "dynamic-u8u8" else QuantType.QInt8,
        )  # fmt: skip
    elif scheme.startswith("static"):

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                starts = range(0, len(calibration), 32)
                self.batches = (model_feeds(tokenizer, calibration[s : s + 32], max_length) for s in starts)

            def get_next(self):
                return next(self.batches, None)

        quantize_static(
            str(fp32), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
            reduce_range=scheme == "static-reduce-range",
        )  # fmt: skip
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(str(fp32))
        quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=32, is_symmetric=True, accuracy_level=4)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def logits_in(session, tokenizer, texts: list[str], max_length: int, batches: list[np.ndarray]) -> np.ndarray:
    """Each text's logits, computed in the given batches (lists of row indices)."""
    from bertops.models.export import model_feeds

    out = np.zeros((len(texts), 2), dtype=np.float32)
    for index in batches:
        feeds = model_feeds(tokenizer, [texts[i] for i in index], max_length)
        out[index] = session.run(["logits"], feeds)[0]
    return out


def machine() -> str:
    """The architecture, cores, and the CPU's vector and int8 dot-product flags (Linux)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, flags: {' '.join(f for f in wanted if f in flags) or 'unknown'}"
    )


def main() -> None:
    import logging

    import pandas as pd

    from bench._common import save_result, spread
    from bertops.config import load_config
    from bertops.models.classifier import load_classifier
    from bertops.models.export import export_onnx, onnx_session, session_logits, torch_logits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models/sst2")
    parser.add_argument("--prepared", type=Path, default=REPO / "data/prepared/sst2")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    batch_size = load_config(args.params).evaluate.batch_size

    model, tokenizer = load_classifier(args.model)
    splits = {name: pd.read_parquet(args.prepared / f"{name}.parquet") for name in ("train", "validation", "eval")}
    calibration = splits["train"]["text"].sample(256, random_state=0).tolist()
    independent = ("static", "static-reduce-range", "weight-only")
    schemes = ("fp32", "dynamic", "dynamic-reduce-range", "dynamic-u8u8", *independent)
    results: dict = {"machine": machine(), "schemes": {}}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(model, tokenizer, fp32)
        logging.getLogger().setLevel(logging.ERROR)
        sessions = {}
        for scheme in schemes:
            path = Path(tmp) / f"{scheme}.onnx"
            try:
                quantise(scheme, fp32, path, tokenizer, calibration, args.max_length)
                sessions[scheme] = onnx_session(path)
            except Exception as exc:  # a scheme this ONNX Runtime cannot build is reported, not fatal
                results["schemes"][scheme] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            results["schemes"][scheme] = {"size_mb": round(path.stat().st_size / 1e6, 1)}

        inputs = {}  # per split: texts, labels, PyTorch fp32's labels, the fp32 graph's logits, the mixes
        for split in ("validation", "eval"):
            texts, labels = splits[split]["text"].tolist(), splits[split]["label"].to_numpy()
            shuffled = rng.permutation(len(texts))
            inputs[split] = (
                texts, labels, torch_logits(model, tokenizer, texts, args.max_length).argmax(-1),
                session_logits(sessions["fp32"], tokenizer, texts, args.max_length, batch_size),
                {"one": [np.array([i]) for i in range(len(texts))],
                 "random32": [shuffled[s : s + 32] for s in range(0, len(texts), 32)]},
            )  # fmt: skip

        def score(split: str, scheme: str) -> dict:
            texts, labels, reference, fp32_logits, mixes = inputs[split]
            base = session_logits(sessions[scheme], tokenizer, texts, args.max_length, batch_size)
            ways = {k: logits_in(sessions[scheme], tokenizer, texts, args.max_length, v) for k, v in mixes.items()}
            agreeing = int((base.argmax(-1) == reference).sum())
            return {
                "examples": len(texts),
                "agreeing_with_fp32": agreeing,
                "agreement_with_fp32": round(agreeing / len(texts), 4),
                "accuracy": round(float((base.argmax(-1) == labels).mean()), 4),
                "fp32_accuracy": round(float((reference == labels).mean()), 4),
                "max_logit_diff_from_fp32_graph": float(np.abs(base - fp32_logits).max()),
                "labels_changed_by_batching": {
                    k: int((v.argmax(-1) != base.argmax(-1)).sum()) for k, v in ways.items()
                },
                "max_logit_change_by_batching": {k: float(np.abs(v - base).max()) for k, v in ways.items()},
            }

        for scheme in sessions:
            results["schemes"][scheme]["validation"] = score("validation", scheme)
            print(scheme, results["schemes"][scheme], flush=True)

        texts = splits["validation"]["text"].tolist()
        order = np.argsort([len(t) for t in texts], kind="stable")
        grouped = [order[s : s + 32] for s in range(0, len(texts), 32)]
        singles = [np.array([i]) for i in rng.choice(len(texts), 200, replace=False)]
        latency: dict[str, list[float]] = {s: [] for s in sessions}
        rate: dict[str, list[float]] = {s: [] for s in sessions}
        for round_ in range(args.rounds):
            for scheme in list(sessions) if round_ % 2 == 0 else list(sessions)[::-1]:
                session = sessions[scheme]
                logits_in(session, tokenizer, texts, args.max_length, grouped[:3])  # warm
                times = []
                for one in singles:
                    started = time.perf_counter()
                    logits_in(session, tokenizer, texts, args.max_length, [one])
                    times.append(time.perf_counter() - started)
                latency[scheme].append(1000 * float(np.median(times)))
                started = time.perf_counter()
                logits_in(session, tokenizer, texts, args.max_length, grouped)
                rate[scheme].append(len(texts) / (time.perf_counter() - started))
        for scheme in sessions:
            entry = results["schemes"][scheme]
            entry["p50_ms_one_sentence"] = spread(latency[scheme], 2)
            entry["texts_per_s_batches_of_32"] = spread(rate[scheme], 1)
            entry["latency_ratio_vs_shipped"] = round(np.median(latency[SHIPPED]) / np.median(latency[scheme]), 3)
            entry["rate_ratio_vs_shipped"] = round(np.median(rate[scheme]) / np.median(rate[SHIPPED]), 3)

        shipped = results["schemes"][SHIPPED]["validation"]["agreeing_with_fp32"]

        def fast(scheme: str) -> bool:
            entry = results["schemes"][scheme]
            return entry["latency_ratio_vs_shipped"] >= 0.9 and entry["rate_ratio_vs_shipped"] >= 0.9

        def agreement(scheme: str) -> int:
            return results["schemes"][scheme]["validation"]["agreeing_with_fp32"]

        steady = [
            s for s in sessions
            if s in independent and fast(s) and agreement(s) >= shipped - 1
            and not any(results["schemes"][s]["validation"]["labels_changed_by_batching"].values())
        ]  # fmt: skip
        closer = [s for s in sessions if s.startswith("dynamic-") and fast(s) and agreement(s) >= shipped + 2]
        pick = steady or closer
        results["chosen_on_validation"] = max(pick, key=agreement) if pick else SHIPPED
        for scheme in sessions:  # the eval split, once, after the choice, for the record
            results["schemes"][scheme]["eval"] = score("eval", scheme)
    save_result("int8_batch_independence", results)


if __name__ == "__main__":
    main()
