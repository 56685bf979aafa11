"""Do the endpoint's embeddings keep their meaning? Question-to-paragraph retrieval on SQuAD v1.1.

400 paragraphs of the SQuAD v1.1 dev set (whole articles, seeded; one question each); each question's
nearest paragraph by cosine of the embeddings; recall@1, recall@5, MRR. Three embedders, in one
run, on the same texts:

- the endpoint's `POST /embed` (whatever `serve.embedding_model` made it: by default the parent
  encoder, exported to ONNX int8), through `bertops.client.Client`;
- the parent encoder itself (all-MiniLM-L6-v2, PyTorch fp32, mean pooling): the baseline; the
  goal is the endpoint >= parent - 0.01 recall@1;
- the served classifier's own encoder (mean pooling over its token states, PyTorch fp32): what
  /embed served before `serve.embedding_model` existed.

    python bench/embedding_retrieval.py --url http://127.0.0.1:3000 [--model-dir MODEL] [--paragraphs 400]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def scores(questions: np.ndarray, paragraphs: np.ndarray) -> dict:
    from bertops.evaluation.embedding import ranks, retrieval_metrics

    return {k: round(v, 4) for k, v in retrieval_metrics(ranks(questions, paragraphs)).items()}


def torch_embed(model_dir: str, texts: list[str], max_length: int = 128) -> np.ndarray:
    from bertops.evaluation.embedding import torch_embedder

    return torch_embedder(model_dir, max_length, 32, lambda text: text)(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--model-dir", help="the served classifier's folder (its own encoder, for comparison)")
    parser.add_argument("--paragraphs", type=int, default=400)
    args = parser.parse_args()

    from bench._common import save_result
    from bertops.client import Client
    from bertops.evaluation.embedding import retrieval_pairs
    from bertops.models.pretrained import resolve_model_source

    datasets = Path(os.environ.get("BERTOPS_DATASETS", REPO.parent / "shared" / "datasets"))
    articles = json.loads((datasets / "squad-v1.1" / "dev-v1.1.json").read_text())["data"]
    questions, paragraphs = retrieval_pairs(articles, args.paragraphs, seed=0)
    with Client(args.url) as client:
        meta = client.metadata()
        # every embedder cuts texts where the endpoint does (its max_length): equal settings
        results: dict = {"paragraphs": len(paragraphs), "max_length": meta["max_length"]}
        results["endpoint"] = {
            "embedding_model": meta.get("embedding_model"),
            "model_version": meta["model_version"],
            **scores(client.encode(questions), client.encode(paragraphs)),
        }
    parent = resolve_model_source("packaged")
    length = meta["max_length"]
    results["parent_encoder_torch_fp32"] = scores(
        torch_embed(parent, questions, length), torch_embed(parent, paragraphs, length)
    )
    if args.model_dir:
        results["classifier_own_encoder_torch_fp32"] = scores(
            torch_embed(args.model_dir, questions, length), torch_embed(args.model_dir, paragraphs, length)
        )
    results["endpoint_minus_parent_recall@1"] = round(
        results["endpoint"]["recall@1"] - results["parent_encoder_torch_fp32"]["recall@1"], 4
    )
    save_result("embedding_retrieval", results)


if __name__ == "__main__":
    main()
