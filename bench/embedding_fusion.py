"""Is there a faster fp32 runtime for `/embed`'s encoder? ONNX Runtime's transformer optimizer
(fused Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization) against the graph
`package` exports, both fp32, both with ONNX Runtime's own graph optimisations on.

The encoder is exported with eager attention (the optimizer's attention fusion does not match the
SDPA graph), mean-pooled as `/embed` serves it. Baseline: the same export without the offline
fusions. Texts: a seeded sample of SST-2 **train** sentences (the eval split stays unread), in
requests of 8, one ONNX Runtime thread, alternating rounds; prints texts/s of each, the ratio, and
the largest difference of the embeddings.

    python bench/embedding_fusion.py [--rounds 5] [--texts 800]
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

    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel, AutoTokenizer

    from bench._common import onnx_feeds, save_result, sst2_train_sample
    from bertops.models.export import export_onnx, onnx_session
    from bertops.models.pretrained import resolve_model_source

    source = resolve_model_source("packaged")
    tokenizer = AutoTokenizer.from_pretrained(source)
    encoder = AutoModel.from_pretrained(source, attn_implementation="eager")
    config = encoder.config
    work = Path(tempfile.mkdtemp(prefix="bertops-fusion-"))
    plain, fused = work / "plain.onnx", work / "fused.onnx"
    export_onnx(encoder, tokenizer, plain, embedding_only=True)
    optimized = optimize_model(
        str(plain), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    fusions = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(fused))

    texts = sst2_train_sample(args.texts)
    batches = [texts[i : i + 8] for i in range(0, len(texts), 8)]

    def feeds(batch):
        return onnx_feeds(tokenizer, batch)

    sessions = {"export (baseline)": onnx_session(plain, 1), "fused": onnx_session(fused, 1)}
    outputs = {
        name: np.concatenate([s.run(["embedding"], feeds(b))[0] for b in batches]) for name, s in sessions.items()
    }
    diff = float(np.abs(outputs["fused"] - outputs["export (baseline)"]).max())
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for batch in batches:
                session.run(["embedding"], feeds(batch))
            rates[name].append(len(texts) / (time.perf_counter() - start))
    print(f"fusions: {fusions}")
    print(f"max abs difference of the embeddings: {diff:.2e}")
    for name, values in rates.items():
        print(f"{name:18} {statistics.median(values):7.1f} texts/s ({min(values):.1f}-{max(values):.1f})")
    ratios = [f / b for f, b in zip(rates["fused"], rates["export (baseline)"], strict=True)]
    print(f"fused / baseline: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}), per round")
    save_result("embedding_fusion", {"fusions": fusions, "max_abs_diff": diff, "texts_per_s": rates, "ratios": ratios})


if __name__ == "__main__":
    main()
