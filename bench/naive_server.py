"""The baselines for bench/endpoint.py: the naive way to serve a transformers model, and its tuned forms.

A plain FastAPI app that runs the model once per request (no batching) on the same model folder
the bertops endpoint serves. Default form: a transformers `pipeline` (PyTorch fp32) in a sync
route, i.e. FastAPI's threadpool runs up to 40 requests at once, each with torch's default
intra-op threads (one per core): on a small machine the threads oversubscribe the cores.

Tuning options (what a careful engineer would try before blaming the model):
- `--async-route`: the route is `async def`, so requests run one at a time on the event loop
  (no oversubscription; the model call blocks the loop while it runs);
- `--threads N`: `torch.set_num_threads(N)` (PyTorch), or the session's intra-op threads (ONNX);
- `--runtime onnx`: ONNX Runtime on the model folder's fp32 export (`onnx/model.onnx`, the very
  file the bertops endpoint serves as its `onnx` runtime; `--onnx-file` for another): a tokenizer
  call and one `session.run` per request, still no batching, so that bertops' ONNX runtimes can be
  compared at equal precision.

    python bench/naive_server.py --model MODEL_DIR --port 3990 [--async-route] [--threads N] [--runtime onnx]

`--embed`: instead, a plain PyTorch mean-pooling embedding server of an encoder folder
(`POST /embed {"texts": [...]}` -> one unit vector per text; the baseline of
bench/embedding_throughput.py): one request at a time per route call, its texts as one padded batch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

MAX_LENGTH = 128


class Request(BaseModel):
    text: str


class Texts(BaseModel):
    texts: list[str]


def torch_embedder(model_dir: str, threads: int | None):
    import torch
    from transformers import AutoModel, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    def embed(texts: list[str]) -> list[list[float]]:
        feeds = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**feeds).last_hidden_state
            mask = feeds["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return [[round(float(x), 6) for x in row] for row in pooled]

    return embed


def make_embed_app(model_dir: str, async_route: bool = False, threads: int | None = None) -> FastAPI:
    embed = torch_embedder(model_dir, threads)
    app = FastAPI()

    if async_route:

        @app.post("/embed")
        async def embed_async(request: Texts) -> list:
            return [{"embedding": v} for v in embed(request.texts)]

    else:

        @app.post("/embed")
        def embed_sync(request: Texts) -> list:
            return [{"embedding": v} for v in embed(request.texts)]

    @app.get("/readyz")
    def ready() -> dict:
        return {"ok": True}

    return app


def torch_classifier(model_dir: str, threads: int | None):
    import torch
    from transformers import pipeline

    if threads:
        torch.set_num_threads(threads)
    classifier = pipeline(
        "text-classification",
        model=model_dir,
        tokenizer=model_dir,
        trust_remote_code=True,
        device="cpu",
        truncation=True,
        max_length=MAX_LENGTH,
    )
    return lambda text: classifier(text)[0]


def onnx_classifier(model_dir: str, threads: int | None, onnx_file: str):
    import json

    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per core
    session = ort.InferenceSession(str(Path(model_dir) / onnx_file), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    id2label = json.loads((Path(model_dir) / "config.json").read_text())["id2label"]

    def classify(text: str) -> dict:
        feeds = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
        logits = session.run(["logits"], {name: feeds[name].astype(np.int64) for name in inputs})[0][0]
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        best = int(scores.argmax())
        return {"label": id2label[str(best)], "score": float(scores[best])}

    return classify


def make_app(
    model_dir: str,
    runtime: str = "torch",
    async_route: bool = False,
    threads: int | None = None,
    onnx_file: str = "onnx/model.onnx",
) -> FastAPI:
    if runtime == "torch":
        classify = torch_classifier(model_dir, threads)
    else:
        classify = onnx_classifier(model_dir, threads, onnx_file)
    app = FastAPI()

    if async_route:

        @app.post("/classify")
        async def classify_async(request: Request) -> dict:
            return classify(request.text)

    else:

        @app.post("/classify")
        def classify_sync(request: Request) -> dict:
            return classify(request.text)

    @app.get("/readyz")
    def ready() -> dict:
        return {"ok": True}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=3990)
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--async-route", action="store_true", help="async def route: one request at a time")
    parser.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime intra-op threads")
    parser.add_argument("--onnx-file", default="onnx/model.onnx", help="relative to --model (with --runtime onnx)")
    parser.add_argument("--embed", action="store_true", help="a PyTorch mean-pooling embedding server instead")
    args = parser.parse_args()
    uvicorn.run(
        make_embed_app(args.model, args.async_route, args.threads)
        if args.embed
        else make_app(args.model, args.runtime, args.async_route, args.threads, args.onnx_file),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )
