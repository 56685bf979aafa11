"""Which int8 quantisation scheme to ship, chosen on the validation slice, then reported once on eval.

The choice between per-channel and per-tensor weight scales of ONNX Runtime's dynamic int8
quantisation is a choice among settings, so it is made on the validation slice carved from train
(`data/prepared/<dataset>/validation.parquet`): the scheme whose predictions agree most with
PyTorch fp32 there wins (ties: the smaller accuracy drop). The eval split is scored once, after
the choice, for the record. Run after `make run` (it reads models/sst2 and data/prepared/sst2):

    python bench/int8_scheme.py [--model models/sst2] [--prepared data/prepared/sst2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import logging

    import pandas as pd
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bertops.models.classifier import load_classifier
    from bertops.models.export import export_onnx, onnx_session, session_logits, torch_logits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models/sst2")
    parser.add_argument("--prepared", type=Path, default=REPO / "data/prepared/sst2")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    model, tokenizer = load_classifier(args.model)
    splits = {name: pd.read_parquet(args.prepared / f"{name}.parquet") for name in ("validation", "eval")}
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "schemes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(model, tokenizer, fp32)
        logging.getLogger().setLevel(logging.ERROR)
        sessions = {}
        for scheme, per_channel in (("per-channel", True), ("per-tensor", False)):
            path = Path(tmp) / f"{scheme}.onnx"
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=per_channel)
            sessions[scheme] = onnx_session(path)

        def score(split: str, scheme: str) -> dict:
            frame = splits[split]
            texts, labels = frame["text"].tolist(), frame["label"].to_numpy()
            reference = torch_logits(model, tokenizer, texts, args.max_length).argmax(-1)
            predicted = session_logits(sessions[scheme], tokenizer, texts, args.max_length).argmax(-1)
            return {
                "examples": len(texts),
                "agreement_with_fp32": round(float((predicted == reference).mean()), 4),
                "accuracy": round(float((predicted == labels).mean()), 4),
                "fp32_accuracy": round(float((reference == labels).mean()), 4),
            }

        for scheme in sessions:
            results["schemes"][scheme] = {"validation": score("validation", scheme)}
        chosen = max(
            sessions,
            key=lambda s: (
                results["schemes"][s]["validation"]["agreement_with_fp32"],
                results["schemes"][s]["validation"]["accuracy"],
            ),
        )
        results["chosen_on_validation"] = chosen
        # The eval split, once, after the choice (both schemes, for the record).
        for scheme in sessions:
            results["schemes"][scheme]["eval"] = score("eval", scheme)
    from bench._common import save_result

    save_result("int8_scheme", results)


if __name__ == "__main__":
    main()
