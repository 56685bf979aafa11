"""What every bertops service shares: the settings `bertops package` wrote, the runtime choice,
the request encoding (`bertops_encoding`, the very module `prepare` used), the model call,
bearer-token auth and the Prometheus series. Each task's service class (service.py) sits on it.

This file needs no bertops install: a Bento carries it with `bertops_encoding.py` and the task's
pure core, and runs anywhere its requirements are installed.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path
from typing import Annotated

import bertops_encoding as encoding  # copied beside this file by `bertops package`
from fastapi import FastAPI
from pydantic import Field

SETTINGS_FILE = Path(__file__).with_name("bertops_serving.json")
OPEN_PATHS = ("/healthz", "/livez", "/readyz")  # probes stay open when a token is required
TASK_ROUTES = ("/classify", "/tag", "/answer")  # one per built-in task; the SHARED ones are served by all
SHARED_ROUTES = ("/embed", "/tokenize")
API_PATHS = (*TASK_ROUTES, *SHARED_ROUTES, "/metadata", "/metrics")


def load_settings() -> dict:
    """The settings `bertops package` wrote for this Bento (model tag, task, serving limits)."""
    if not SETTINGS_FILE.is_file():
        raise RuntimeError(f"{SETTINGS_FILE} is missing: build the service with `bertops package`, not by hand")
    return json.loads(SETTINGS_FILE.read_text())


def text_type(max_chars: int):
    """One non-blank text of at most max_chars characters (a longer one is a 400 of its own request)."""
    return Annotated[str, Field(min_length=1, max_length=max_chars, pattern=r"\S", description="one non-blank text")]


def batch_type(item, max_items: int):
    return Annotated[list[item], Field(min_length=1, max_length=max_items)]


class Metrics:
    """bertops' Prometheus series, created in the worker (after BentoML set up multiprocess mode)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "bertops_requests_total", "HTTP requests by endpoint and outcome", ["endpoint", "outcome"]
        )
        self.batch_size = Histogram(
            "bertops_batch_size",
            "texts per model call (after adaptive batching)",
            ["endpoint"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.inference = Histogram(
            "bertops_inference_seconds",
            "seconds per model call",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.truncated = Counter("bertops_truncated_texts_total", "texts truncated to the model's max length")

    def observe(self, endpoint: str, batch: int, seconds: float, truncated: int = 0) -> None:
        self.batch_size.labels(endpoint).observe(batch)
        self.inference.labels(endpoint).observe(seconds)
        if truncated:
            self.truncated.inc(truncated)


_metrics: Metrics | None = None


def metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def guard(settings: dict, route: str):
    """ASGI middleware class for a service whose task route is `route`: bearer-token check (when
    configured), JSON only, another task's route refused with a 400 that names the right one, and
    request counts by outcome."""
    serve = settings["serve"]

    class Guard:
        def __init__(self, app) -> None:
            self.app = app
            token = os.environ.get(serve["api_token_env"] or "", "")
            self.token = token.encode() if token else None

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            path = scope.get("path", "")
            endpoint = path if path in (*API_PATHS, *OPEN_PATHS, route) else "other"
            if self.token is not None and path not in OPEN_PATHS and not self._authorized(scope):
                return await _refuse(
                    send,
                    endpoint,
                    401,
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                    [(b"www-authenticate", b"Bearer")],
                )
            if scope.get("method") == "POST" and path in (*TASK_ROUTES, *SHARED_ROUTES, route):
                if not _is_json(scope):
                    return await _refuse(
                        send,
                        endpoint,
                        415,
                        'send the texts as JSON with \'Content-Type: application/json\', e.g. {"texts": ["a text"]}',
                    )
                if path in TASK_ROUTES and path != route:
                    return await _refuse(send, endpoint, 400, f"this is a {settings['task']} model: POST {route}")
            status = {}

            async def watch(message) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, watch)
            finally:
                metrics().requests.labels(endpoint, f"{status.get('code', 500) // 100}xx").inc()

        def _authorized(self, scope) -> bool:
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, credentials = header.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    return Guard


async def _refuse(send, endpoint: str, status: int, message: str, headers: list | None = None) -> None:
    metrics().requests.labels(endpoint, f"{status // 100}xx").inc()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})


def _is_json(scope) -> bool:
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
    return content_type.split(b";")[0].strip().lower() == b"application/json"


def info_app(describe) -> FastAPI:
    """The read-only GET routes beside BentoML's POST APIs: `describe()` -> the /metadata answer
    (the running service's, set when it starts)."""
    app = FastAPI()

    @app.get("/metadata")
    def metadata() -> dict:
        """The model version, runtime, lineage, label map and max sequence length."""
        return describe()

    return app


class Engine:
    """The model on the chosen runtime, and the request encoding shared with training."""

    def __init__(self, path: str, settings: dict, head) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer

        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.model_max_length = 10**9  # bertops_encoding truncates, and says which texts it cut
        self.max_length = settings["max_length"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # BERTOPS_SERVE_RUNTIME overrides the packaged choice at start (ops, benchmarks); an ONNX
        # runtime is only served if it passed its agreement check at package time.
        runtime = os.environ.get("BERTOPS_SERVE_RUNTIME") or settings["serve"]["runtime"]
        if runtime == "auto":
            runtime = "torch" if self.device == "cuda" else settings["cpu_runtime"]
        if runtime != "torch" and runtime not in settings["onnx_files"]:
            raise RuntimeError(
                f"runtime {runtime!r} is not servable for this model: it is unknown or failed its "
                f"agreement check at package time (servable: torch, {', '.join(settings['onnx_files'])})"
            )
        self.runtime = runtime
        self.config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        if runtime == "torch":
            self.model = (
                head.from_pretrained(
                    path,
                    trust_remote_code=True,
                    attn_implementation="sdpa",  # the head's code is inside the folder
                )
                .to(self.device)
                .eval()
            )
            self.dtype = None
            if self.device == "cuda":
                self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            file = settings["onnx_files"][runtime]
            self.session = ort.InferenceSession(str(Path(path) / file), options, providers=["CPUExecutionProvider"])

    def encode(self, inputs: list):
        """Texts, or [first, second] pairs -> (model feeds, which inputs were cut): normalised and
        truncated by `bertops_encoding`, exactly as `prepare` did for training."""
        normalised = [
            encoding.normalize_input(x, self.settings["unicode_form"], self.settings["lowercase"]) for x in inputs
        ]
        encoded = encoding.encode(self.tokenizer, normalised, self.max_length)
        return encoding.to_feeds(
            encoded.input_ids, encoded.token_type_ids, self.tokenizer.pad_token_id
        ), encoded.truncated

    def run(self, feeds: dict, output: str = "logits"):
        """output: "logits" or "embedding" (mean of the encoder's token states)."""
        import torch

        if self.runtime != "torch":
            return self.session.run([output], feeds)[0]
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode(), torch.autocast(self.device, dtype=self.dtype, enabled=self.dtype is not None):
            if output == "logits":
                return self.model(**tensors).logits.float().cpu().numpy()
            hidden = self.model.base_model(**tensors).last_hidden_state.float()
            mask = tensors["attention_mask"].unsqueeze(-1).float()
            return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu().numpy()

    def forward(self, feeds: dict):
        """The torch model's whole output (heads with several outputs, e.g. start/end logits)."""
        import torch

        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode():
            return self.model(**tensors)
