"""Is OpenVINO a faster fp32 runtime than ONNX Runtime for `/embed`'s encoder on this CPU?

The same ONNX graph `package` exports for the embedding model (the packaged all-MiniLM-L6-v2,
mean-pooled), run by ONNX Runtime (what the endpoint serves) and by OpenVINO's CPU plugin with
fp32 inference precision, one thread each, on a seeded sample of SST-2 **train** sentences (the
eval split stays unread) in requests of 8, over alternating rounds. Prints texts/s of each, the
ratio per round and how far OpenVINO's embeddings are from ONNX Runtime's.

OpenVINO is not a bertops dependency; install it beside the project to run this:

    .venv/bin/pip install openvino && python bench/embedding_openvino.py [--rounds 5] [--texts 800]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--texts", type=int, default=800)
    args = parser.parse_args()
    try:
        import openvino as ov
    except ImportError:
        sys.exit("needs OpenVINO (not a bertops dependency): .venv/bin/pip install openvino")
    from transformers import AutoModel, AutoTokenizer

    from bench._common import onnx_feeds, save_result, sst2_train_sample
    from bertops.models.export import export_onnx, onnx_session
    from bertops.models.pretrained import resolve_model_source

    source = resolve_model_source("packaged")
    tokenizer = AutoTokenizer.from_pretrained(source)
    graph = Path(tempfile.mkdtemp(prefix="bertops-openvino-")) / "embedding.onnx"
    export_onnx(AutoModel.from_pretrained(source), tokenizer, graph, embedding_only=True)

    texts = sst2_train_sample(args.texts)

    def feeds(batch):
        return onnx_feeds(tokenizer, batch)

    fed = [feeds(texts[i : i + 8]) for i in range(0, len(texts), 8)]  # tokenised once: the runtimes alone are timed
    ort_session = onnx_session(graph, 1)
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(graph)),
        "CPU",
        {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    )
    request, output = compiled.create_infer_request(), compiled.output("embedding")
    runtimes = {
        "onnxruntime": lambda f: ort_session.run(["embedding"], f)[0],
        "openvino": lambda f: request.infer(f)[output],
    }
    a, b = (np.concatenate([run(f) for f in fed]) for run in runtimes.values())
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    for r in range(args.rounds):
        for name in list(runtimes) if r % 2 == 0 else list(runtimes)[::-1]:
            start = time.perf_counter()
            for f in fed:
                runtimes[name](f)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    print(f"OpenVINO {ov.__version__}; CPU capabilities {core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}")
    print(f"embeddings: max abs difference {np.abs(a - b).max():.2e}, min cosine {cosine.min():.7f}")
    for name, values in rates.items():
        print(f"{name:12} {statistics.median(values):7.1f} texts/s ({min(values):.1f}-{max(values):.1f})")
    ratios = [o / t for o, t in zip(rates["openvino"], rates["onnxruntime"], strict=True)]
    print(f"openvino / onnxruntime: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}), per round")
    diff = float(np.abs(a - b).max())
    save_result(
        "embedding_openvino", {"openvino": ov.__version__, "max_abs_diff": diff, "texts_per_s": rates, "ratios": ratios}
    )


if __name__ == "__main__":
    main()
