"""The baseline for bench/endpoint.py: the naive way to serve a transformers model.

A plain FastAPI app that calls a transformers `pipeline` once per request (no batching, PyTorch
fp32), on the same model folder the bertops endpoint serves.

    python bench/naive_server.py --model MODEL_DIR --port 3990
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Request(BaseModel):
    text: str


def make_app(model_dir: str) -> FastAPI:
    classifier = pipeline(
        "text-classification",
        model=model_dir,
        tokenizer=model_dir,
        trust_remote_code=True,
        device="cpu",
        truncation=True,
        max_length=128,
    )
    app = FastAPI()

    @app.post("/classify")
    def classify(request: Request) -> dict:
        return classifier(request.text)[0]

    @app.get("/readyz")
    def ready() -> dict:
        return {"ok": True}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=3990)
    args = parser.parse_args()
    uvicorn.run(make_app(args.model), host="127.0.0.1", port=args.port, log_level="warning")
