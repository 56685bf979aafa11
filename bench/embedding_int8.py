"""Can the embedding model be served in int8? Dynamic int8 schemes of the parent encoder against its
fp32 ONNX export, on SST-2 train sentences (a seeded sample; the eval split stays unread): agreement
with PyTorch fp32 and speed, in one run.

For each scheme: the cosine of each text's embedding to PyTorch fp32 (min, 1st percentile, mean:
`serve` accepts int8 for /embed only at a min of 0.99, `export_embedding_model`), the share of
texts whose nearest neighbour among the others is unchanged, and texts/s of one ONNX Runtime
thread on requests of 8 texts (what one lane of the endpoint runs). fp32 ONNX is the baseline.

    python bench/embedding_int8.py [--texts 400]
"""

from __future__ import annotations

import argparse
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


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=400)
    args = parser.parse_args()

    import onnx
    import pandas as pd
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    from bench._common import save_result
    from bertops.models.export import export_onnx, onnx_session, session_logits, torch_embeddings
    from bertops.models.pretrained import resolve_model_source

    datasets = Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared" / "datasets"))
    train = pd.read_csv(datasets / "sst2" / "train.tsv", sep="\t")["sentence"]
    texts = train.sample(n=args.texts, random_state=0).tolist()
    source = resolve_model_source("packaged")
    encoder, tokenizer = AutoModel.from_pretrained(source).eval(), AutoTokenizer.from_pretrained(source)
    reference = torch_embeddings(encoder, tokenizer, texts, 128)
    neighbours = np.argsort(-(unit(reference) @ unit(reference).T), axis=1)[:, 1]
    work = Path(tempfile.mkdtemp(prefix="bertops-int8-"))
    fp32 = work / "model.onnx"
    export_onnx(encoder, tokenizer, fp32, embedding_only=True)
    matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul"]
    ffn_out = [n for n in matmuls if n.endswith("/output/dense/MatMul") and "attention" not in n]
    schemes: dict[str, dict | None] = {
        "fp32 (baseline)": None,
        "int8 per-channel, every MatMul + Gather (serve's scheme)": {"per_channel": True},
        "int8 per-channel, MatMul only": {"per_channel": True, "op_types_to_quantize": ["MatMul"]},
        "int8 per-channel, MatMul only, reduce_range": {
            "per_channel": True,
            "op_types_to_quantize": ["MatMul"],
            "reduce_range": True,
        },
        "int8 per-channel, FFN output dense kept fp32": {"per_channel": True, "nodes_to_exclude": ffn_out},
        "int8 per-channel, layer 0 kept fp32": {
            "per_channel": True,
            "nodes_to_exclude": [n for n in matmuls if "layer.0/" in n],
        },
    }
    requests = [texts[i : i + 8] for i in range(0, min(len(texts), 160), 8)]
    results = []
    for name, options in schemes.items():
        path = fp32
        if options is not None:
            path = work / f"{len(results)}.onnx"
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, **options)
        session = onnx_session(path, threads=1)
        values = session_logits(session, tokenizer, texts, 128, 64, output="embedding")
        cosine = np.sum(unit(values) * unit(reference), axis=1)
        moved = np.argsort(-(unit(values) @ unit(values).T), axis=1)[:, 1]
        for request in requests[:3]:
            session_logits(session, tokenizer, request, 128, 8, output="embedding")
        started = time.perf_counter()
        for request in requests:
            session_logits(session, tokenizer, request, 128, 8, output="embedding")
        speed = sum(map(len, requests)) / (time.perf_counter() - started)
        results.append(
            {
                "scheme": name,
                "min_cosine": round(float(cosine.min()), 4),
                "p1_cosine": round(float(np.quantile(cosine, 0.01)), 4),
                "mean_cosine": round(float(cosine.mean()), 5),
                "nearest_neighbour_kept": round(float((moved == neighbours).mean()), 3),
                "texts_per_s_one_thread": round(speed, 1),
            }
        )
        print(results[-1], flush=True)
    base = results[0]["texts_per_s_one_thread"]
    for r in results:
        r["speed_vs_fp32"] = round(r["texts_per_s_one_thread"] / base, 2)
    save_result(
        "embedding_int8",
        {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "texts": len(texts), "schemes": results},
    )


if __name__ == "__main__":
    main()
