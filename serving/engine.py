"""What every bertops service shares: the settings `bertops package` wrote, the runtime choice,
the request encoding (`bertops_encoding`, the very module `prepare` used), the model call,
bearer-token auth and the Prometheus series. Each task's service class (service.py) sits on it.

This file needs no bertops install: a Bento carries it with `bertops_encoding.py` and the task's
pure core, and runs anywhere its requirements are installed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import bertops_encoding as encoding  # copied beside this file by `bertops package`
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field

SETTINGS_FILE = Path(__file__).with_name("bertops_serving.json")
OPEN_PATHS = ("/healthz", "/livez", "/readyz")  # probes stay open when a token is required
TASK_ROUTES = ("/classify", "/tag", "/answer")  # one per built-in task; the SHARED ones are served by all
SHARED_ROUTES = ("/embed", "/tokenize", "/v1/embeddings")  # /v1/embeddings: the OpenAI-compatible embeddings API
ADMIN_PATHS = ("/admin/reload", "/admin/drift")  # their own token (serve.admin_token_env), not the API token
API_PATHS = (*TASK_ROUTES, *SHARED_ROUTES, "/metadata", "/metrics", "/monitor/window", *ADMIN_PATHS)


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
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "bertops_requests_total", "HTTP requests by endpoint and outcome", ["endpoint", "outcome"]
        )
        self.batch_size = Histogram(
            "bertops_batch_size",
            "texts per model call (after adaptive batching)",
            ["endpoint", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.inference = Histogram(
            "bertops_inference_seconds",
            "seconds per model call",
            ["endpoint", "version"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.truncated = Counter("bertops_truncated_texts_total", "texts truncated to the model's max length")
        self.answers = Counter(
            "bertops_answers_total", "requests answered, by the version that answered", ["endpoint", "version"]
        )
        self.failures = Counter(
            "bertops_failures_total",
            "requests the model failed (a 5xx), by the version that failed",
            ["endpoint", "version"],
        )
        self.shadow = Counter(
            "bertops_shadow_answers_total",
            "inputs the shadow version also answered, by agreement with production",
            ["endpoint", "version", "outcome"],
        )
        self.shadow_skipped = Counter("bertops_shadow_skipped_total", "requests the shadow skipped (it was busy)")
        # drift monitoring's live side (serve.monitor): what the endpoint is asked and what it answers
        self.input_tokens = Histogram(
            "bertops_input_tokens", "word pieces per input (with [CLS]/[SEP])", ["version"],
            buckets=(8, 16, 24, 32, 48, 64, 96, 128, 256, 512),
        )  # fmt: skip
        self.unknown = Counter("bertops_unknown_wordpieces_total", "unknown word pieces in inputs", ["version"])
        self.predictions = Counter("bertops_predictions_total", "predicted labels", ["version", "label"])
        self.confidence = Histogram(
            "bertops_confidence", "top probability per answer", ["version"],
            buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
        )  # fmt: skip
        # set by `bertops monitor` (POST /admin/drift) after each comparison
        self.drift_pvalue = Gauge(
            "bertops_drift_pvalue", "p-value of the last drift test, per feature", ["version", "feature"],
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.drift_psi = Gauge(
            "bertops_drift_psi", "population stability index of the last check, per feature", ["version", "feature"],
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.drift_detected = Gauge(
            "bertops_drift_detected", "1 when the last check found drift", ["version"], multiprocess_mode="mostrecent"
        )

    def observe_window(self, version: str, features: dict, labels: list) -> None:
        """The Prometheus side of one recorded batch (bertops_window's columns)."""
        tokens = self.input_tokens.labels(version)
        for n in features["tokens"]:
            tokens.observe(int(n))
        unknown = float(np.sum(features["unknown_share"] * np.maximum(features["tokens"] - 2, 1)))
        if unknown:
            self.unknown.labels(version).inc(unknown)
        if "label" in features:
            confidence = self.confidence.labels(version)
            for label, p in zip(features["label"], features["confidence"]):
                self.predictions.labels(version, labels[int(label)]).inc()
                confidence.observe(float(p))

    def set_drift(self, version: str, report: dict) -> None:
        for feature in report.get("features") or []:
            if feature.get("p_value") is not None:
                self.drift_pvalue.labels(version, feature["feature"]).set(feature["p_value"])
            if feature.get("psi") is not None:
                self.drift_psi.labels(version, feature["feature"]).set(feature["psi"])
        self.drift_detected.labels(version).set(1.0 if report.get("verdict") == "drift" else 0.0)

    def observe(self, endpoint: str, version: str, batch: int, seconds: float, truncated: int = 0) -> None:
        self.batch_size.labels(endpoint, version).observe(batch)
        self.inference.labels(endpoint, version).observe(seconds)
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
    configured), JSON only, another task's route refused with a 400 that names the right one,
    bodies over `serve.max_body_bytes` refused with 413 before they are read, and request counts
    by outcome."""
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
            if self.token is not None and path not in (*OPEN_PATHS, *ADMIN_PATHS) and not self._authorized(scope):
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
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                # A body over the limit is refused before it is read whole: by its declared length
                # at once, and by a running count when it declares none (chunked).
                limit = serve["max_body_bytes"]
                declared = dict(scope.get("headers") or []).get(b"content-length", b"").strip()
                if declared.isdigit() and int(declared) > limit:
                    return await _refuse(send, endpoint, 413, _too_large(int(declared), limit))
                body = await _read_body(receive, limit)
                if body is None:
                    return await _refuse(send, endpoint, 413, _too_large(None, limit))
                receive = _replay(body, receive)
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
            return bearer_matches(header, self.token)

    return Guard


def bearer_matches(header: bytes, token: bytes) -> bool:
    scheme, _, credentials = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token)


async def _refuse(send, endpoint: str, status: int, message: str, headers: list | None = None) -> None:
    metrics().requests.labels(endpoint, f"{status // 100}xx").inc()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    error = openai_error(status, message) if endpoint.startswith("/v1/") else {"error": message}
    await send({"type": "http.response.body", "body": json.dumps(error).encode()})


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """The error body the OpenAI API (and its clients) use."""
    kind = {401: "authentication_error", 404: "not_found_error", 503: "server_error"}.get(
        status, "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class OpenAIRequestError(ValueError):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def parse_openai_embeddings(body: Any, serve: dict, models: set[str]) -> tuple[list[str], str]:
    """A POST /v1/embeddings body -> (texts, encoding_format), or OpenAIRequestError naming what is
    wrong. `models`: the names this endpoint answers to (any of them, or none, may be sent)."""
    if not isinstance(body, dict):
        raise OpenAIRequestError(400, 'send a JSON object, e.g. {"input": ["a text"], "model": "..."}')
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise OpenAIRequestError(400, "'input' must be a non-empty string or list of strings", "input")
    if not all(isinstance(t, str) for t in texts):
        raise OpenAIRequestError(
            400, "'input' must hold strings (token arrays are not supported: send the text)", "input"
        )
    if len(texts) > serve["max_texts_per_request"]:
        raise OpenAIRequestError(
            400, f"'input' holds {len(texts)} texts; at most {serve['max_texts_per_request']} per request", "input"
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise OpenAIRequestError(400, f"input[{i}] is blank", "input")
        if len(text) > serve["max_text_chars"]:
            raise OpenAIRequestError(
                400, f"input[{i}] has {len(text)} characters; at most {serve['max_text_chars']}", "input"
            )
    model = body.get("model")
    if model is not None and model not in models:
        raise OpenAIRequestError(
            404,
            f"model {model!r} is not served here; this endpoint serves {sorted(models)}",
            "model",
            "model_not_found",
        )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise OpenAIRequestError(400, f"'encoding_format' is 'float' or 'base64', not {fmt!r}", "encoding_format")
    if body.get("dimensions") is not None:
        raise OpenAIRequestError(
            400, "'dimensions' is not supported: the model's vectors have a fixed size", "dimensions"
        )
    return texts, fmt


def openai_embeddings_body(vectors: list[list[float]], fmt: str, model: str, tokens: int) -> dict:
    import base64

    def encoded(vector: list[float]):
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode() if fmt == "base64" else vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _too_large(size: int | None, limit: int) -> str:
    got = f"{size} bytes" if size is not None else "more than that"
    return (
        f"request body too large: {got}, the limit is {limit} bytes (serve.max_body_bytes); send fewer or "
        "shorter texts per request"
    )


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it passes `limit` bytes (the rest is never read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, original):
    """An ASGI `receive` that hands the already-read body to the app, then defers to the real one
    (which reports the client's disconnect)."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


def _is_json(scope) -> bool:
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
    return content_type.split(b";")[0].strip().lower() == b"application/json"


# The lineage fields GET /metadata shows (documented in docs/operations.md); the full record stays
# in the registry (`bertops models show`). Absolute paths are cut to their last part.
PUBLIC_LINEAGE = (
    "dataset",
    "data_hash",
    "dvc_md5",
    "git_commit",
    "created_at",
    "stage",
    "task",
    "parent_model",
    "model_sha256",
    "prepared_hash",
)
PUBLIC_EVALUATION = ("examples", "accuracy", "macro_f1", "ece", "entity_f1", "exact_match", "f1")
_ABSOLUTE = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[/\\][^\s'\"()]*[/\\]([^/\\\s'\"()]+)")


def _scrub(value: Any) -> Any:
    """Absolute paths inside strings -> their last component (the server's layout is not public)."""
    if isinstance(value, str):
        return _ABSOLUTE.sub(lambda m: m.group(1), value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def public_lineage(lineage: dict) -> dict:
    """What /metadata tells any caller about where the model came from."""
    evaluation = lineage.get("evaluation") or {}
    gate = lineage.get("gate") or {}
    export = lineage.get("serving_export") or {}
    out = {k: lineage.get(k) for k in PUBLIC_LINEAGE if k in lineage}
    out["evaluation"] = {k: evaluation[k] for k in PUBLIC_EVALUATION if k in evaluation}
    out["gate"] = {"approved": gate.get("approved"), "reasons": gate.get("reasons", []), "runtime": gate.get("runtime")}
    out["serving_export"] = {
        "runtime": export.get("runtime") or export.get("cpu_runtime"),
        "runtimes": {
            name: {k: r.get(k) for k in ("passed", "accuracy", "max_abs_logit_diff", "size_mb")}
            for name, r in (export.get("runtimes") or {}).items()
        },
    }
    return _scrub(out)


class Batcher:
    """Opportunistic batching: a request never waits for company.

    Up to `lanes` model calls run at once, each in a worker thread (the event loop keeps
    accepting). When a lane is free a request runs at once, alone. Requests that arrive while every
    lane is busy queue up and run together as the next call of the first lane to free up (up to
    `max_batch_size` inputs), so batches fill by themselves under load and a lone request after a
    burst is as fast as on a fresh server (BentoML's adaptive batcher, which waits to fill batches
    it has learnt to expect, kept light traffic waiting after any burst). More than `max_queued`
    inputs waiting is an overload: 503, retry later.

    Lanes: on a CPU, a few small calls side by side, one core each, beat one call of the same
    inputs padded to the longest and spread over every core (less padding, no cross-core
    synchronisation in each small matmul); `Engine` sizes the runtime's threads to the lanes.
    """

    def __init__(self, run: Callable[[list], list], max_batch_size: int, max_queued: int, lanes: int = 1) -> None:
        self.run = run  # list of inputs -> one result per input (blocking, thread-safe when lanes > 1)
        self.max_batch_size = max_batch_size
        self.max_queued = max_queued
        self.lanes = max(1, lanes)
        self.pending: deque[tuple[list, asyncio.Future]] = deque()
        self.queued = 0
        self.running = 0  # lanes draining the queue now
        self.computing = 0  # lanes inside a model call now

    async def submit(self, items: list) -> list:
        if self.queued + len(items) > self.max_queued:
            raise Overloaded(
                f"{self.queued} inputs are already waiting (serve.max_queued_texts={self.max_queued}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self.pending.append((items, future))
        self.queued += len(items)
        if self.running < self.lanes:
            self.running += 1
            loop.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[tuple[list, asyncio.Future]]:
        """The oldest waiting requests, up to max_batch_size inputs and to this lane's share of
        what waits: split with the lanes that are idle now (started by the caller), not with the
        busy ones, so nothing waits for a lane that is still computing."""
        free = self.lanes - self.computing  # this lane and the others not inside a model call
        share = min(self.max_batch_size, max(1, -(-self.queued // free)))
        batch, size = [], 0
        while self.pending and (not batch or size + len(self.pending[0][0]) <= share):
            items, future = self.pending.popleft()
            self.queued -= len(items)
            batch.append((items, future))
            size += len(items)
        return batch

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch = self._next_batch()
                if self.pending and self.running < self.lanes:  # work left for an idle lane
                    self.running += 1
                    asyncio.get_running_loop().create_task(self._drain())
                self.computing += 1
                try:
                    await self._run_batch(batch)
                finally:
                    self.computing -= 1
        finally:
            self.running -= 1

    async def _run_batch(self, batch: list[tuple[list, asyncio.Future]]) -> None:
        flat = [x for items, _ in batch for x in items]
        try:
            results = await asyncio.to_thread(self.run, flat)
        except Exception:
            if len(batch) == 1:
                raise_into(batch[0][1])
                return
            for items, future in batch:  # one bad request must not fail the others
                try:
                    future.set_result(await asyncio.to_thread(self.run, items))
                except Exception:
                    raise_into(future)
            return
        offset = 0
        for items, future in batch:
            if not future.done():
                future.set_result(results[offset : offset + len(items)])
            offset += len(items)


CALL_TOKENS_PER_THREAD = {"torch": 29.0, "onnx": 8.0, "onnx-int8": 8.0}  # measured, CPU, this encoder


def call_cost_tokens(configured: float | None, device: str, runtime: str, threads: int) -> float:
    """length_groups' fixed cost of one model call, in tokens: `configured` (serve.group_call_tokens)
    when set; else, on CPU, the cost measured on one thread (a call of 1 x 8 tokens against 8 x 8:
    ONNX Runtime ~8 tokens, PyTorch eager ~29, bench/RESULTS.md) times the call's threads (a token
    costs less with more threads, a call as much); PyTorch on a GPU 1024, a kernel launch being
    worth far more (an estimate, unmeasured). ONNX Runtime runs on the CPU wherever it is served."""
    if configured is not None:
        return float(configured)
    if device == "cuda" and runtime == "torch":
        return 1024.0
    return CALL_TOKENS_PER_THREAD.get(runtime, 8.0) * threads


def length_groups(lengths, call_tokens: float = 8.0) -> list:
    """Row indices grouped by similar length (shortest first), each group to run as one call cut to
    its longest row: the partition of the rows sorted by length that costs least when a call costs
    its padded tokens (rows x its longest) plus `call_tokens` (the fixed cost of a call, in tokens:
    ~8 for a 6-layer encoder on ONNX Runtime, one core: a call of 1 x 8 tokens takes 3.6 ms,
    one of 8 x 8 16.2 ms; bench/serving_batching.py measures the grouping on the endpoint). Exact, by
    dynamic programming over where groups end (O(n^2) in numpy; n <= max_batch_size)."""
    order = np.argsort(lengths, kind="stable")
    longest = np.asarray(lengths, dtype=np.float64)[order]
    n = len(longest)
    cost, start = np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):  # the cheapest cover of rows [0, end) whose last group is [i, end)
        options = cost[:end] + (end - np.arange(end)) * longest[end - 1]
        start[end] = int(np.argmin(options))
        cost[end] = options[start[end]] + call_tokens
    groups, end = [], n
    while end > 0:
        groups.append(order[start[end] : end])
        end = int(start[end])
    return groups[::-1]


class Overloaded(RuntimeError):
    """Too many inputs already queued: the service answers 503."""


def raise_into(future: asyncio.Future) -> None:
    import sys

    if not future.done():
        future.set_exception(sys.exc_info()[1] or RuntimeError("the model call failed"))


class Share:
    """A deterministic share of requests: take() is True for `percent`% of calls, evenly spread
    (10% = every tenth), so a canary's observed share is its configured one, not a random draw."""

    def __init__(self) -> None:
        self.percent, self._credit, self._lock = 0.0, 0.0, threading.Lock()

    def set(self, percent: float) -> None:
        with self._lock:
            self.percent, self._credit = percent, 0.0

    def take(self) -> bool:
        with self._lock:
            self._credit += self.percent
            if self._credit >= 100.0:
                self._credit -= 100.0
                return True
            return False


def without(value: Any, keys: tuple[str, ...]) -> Any:
    """`value` with the given dict keys removed at every depth."""
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


class Shadow:
    """Runs the shadow version on production's requests in the background, at most `max_pending`
    requests at a time (beyond that a request is skipped and counted, never queued), and keeps only
    whether its answers agree with production's (`key` picks what must match)."""

    def __init__(self, key: Callable[[dict], Any], max_pending: int = 64) -> None:
        self.key, self.max_pending = key, max_pending
        self.counts = {"compared": 0, "agreed": 0, "skipped": 0, "errors": 0}
        self.version: str | None = None
        self._tasks: set[asyncio.Task] = set()

    def submit(self, route: str, batcher: Callable[[], Batcher], items: list, answers: list) -> None:
        if len(self._tasks) >= self.max_pending:
            self.counts["skipped"] += 1
            metrics().shadow_skipped.inc()
            return
        task = asyncio.get_running_loop().create_task(self._compare(route, batcher(), items, answers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, route: str, batcher: Batcher, items: list, answers: list) -> None:
        try:
            theirs = await batcher.submit(items)
        except Exception:  # noqa: BLE001 - a failing shadow never touches production's answers
            self.counts["errors"] += 1
            return
        version = theirs[0]["model_version"] if theirs else "?"
        if version != self.version:
            self.version, self.counts = version, {"compared": 0, "agreed": 0, "skipped": 0, "errors": 0}
        agreed = sum(self.key(a) == self.key(b) for a, b in zip(answers, theirs))
        self.counts["compared"] += len(answers)
        self.counts["agreed"] += agreed
        metrics().shadow.labels(route, version, "agree").inc(agreed)
        metrics().shadow.labels(route, version, "disagree").inc(len(answers) - agreed)

    def summary(self) -> dict:
        compared = self.counts["compared"]
        return {
            "version": self.version,
            **self.counts,
            "agreement": self.counts["agreed"] / compared if compared else None,
        }


class NotFollowing(RuntimeError):
    """An admin reload on an endpoint that serves its packaged model only."""


def info_app(describe, reload=None, embed=None, window=None, drift=None) -> FastAPI:
    """The routes beside BentoML's POST APIs: `describe()` -> GET /metadata (the running service's,
    set when it starts); `reload()` -> POST /admin/reload (look at the registry now; needs
    "Authorization: Bearer <value of serve.admin_token_env>"); `await embed(texts)` -> (vectors,
    model version, token count) for POST /v1/embeddings, the OpenAI-compatible embeddings API;
    `window(version, last)` -> GET /monitor/window (the live window drift monitoring compares);
    `drift(report)` -> POST /admin/drift (the last comparison's scores, as Prometheus gauges)."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def openai_embeddings(request: Request):
        """Embeddings in the OpenAI API's shape (input: a string or a list; encoding_format: float or base64)."""
        if embed is None:
            return JSONResponse(openai_error(404, "this service serves no embeddings"), 404)
        try:
            try:
                body = await request.json()
            except ValueError:
                raise OpenAIRequestError(400, "the body is not valid JSON") from None
            version = describe()["model_version"]
            texts, fmt = parse_openai_embeddings(body, load_settings()["serve"], {version, version.split(":")[0]})
        except OpenAIRequestError as exc:
            return JSONResponse(openai_error(exc.status, str(exc), exc.param, exc.code), exc.status)
        try:
            vectors, model, tokens = await embed(texts)
        except Overloaded as exc:
            return JSONResponse(openai_error(503, str(exc)), 503)
        return openai_embeddings_body(vectors, fmt, model, tokens)

    @app.get("/metadata")
    def metadata() -> dict:
        """The model version, runtime, lineage, label map and max sequence length."""
        return describe()

    def admin_refusal(request: Request) -> JSONResponse | None:
        env = load_settings()["serve"].get("admin_token_env") or ""
        token = os.environ.get(env, "")
        if not token:
            return JSONResponse(
                {"error": f"the admin API is off: start the server with {env or 'an admin token'} set"}, 403
            )
        if not bearer_matches(request.headers.get("authorization", "").encode(), token.encode()):
            return JSONResponse({"error": f"missing or wrong admin token: send 'Authorization: Bearer <{env}>'"}, 401)
        return None

    @app.post("/admin/reload")
    def admin_reload(request: Request):
        """Check the registry now and switch to its production version (no restart)."""
        if (refused := admin_refusal(request)) is not None:
            return refused
        try:
            if reload is None:
                raise NotFollowing("this service has no reload")
            status = reload()
        except NotFollowing as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse(status, 503 if status.get("error") else 200)

    @app.get("/monitor/window")
    def monitor_window(version: str | None = None, last: int | None = None):
        """The live window of `version` (default: production): per input, tokens, unknown share,
        truncation, predicted label, confidence and embedding, newest `last` (default: all held)."""
        if last is not None and last < 1:
            return JSONResponse({"error": f"last must be a positive number of inputs, not {last}"}, 400)
        if window is None:
            return JSONResponse({"error": "this service keeps no window"}, 404)
        try:
            return window(version, last)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, 404)

    @app.post("/admin/drift")
    async def admin_drift(request: Request):
        """Record a drift report from `bertops monitor` (its verdict and per-feature scores become
        Prometheus gauges)."""
        if (refused := admin_refusal(request)) is not None:
            return refused
        try:
            report = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not valid JSON"}, 400)
        if not isinstance(report, dict) or not isinstance(report.get("version"), str):
            return JSONResponse({"error": "send a drift report: {version, verdict, features: [...]}"}, 400)
        if not isinstance(report.get("features", []), list):
            return JSONResponse({"error": "'features' must be a list"}, 400)
        if drift is not None:
            try:
                drift(report)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": f"malformed feature in the drift report: {exc}"}, 400)
        return {"recorded": report["version"]}

    return app


class Served:
    """One loaded model version: what a request batch reads once and runs on from start to end."""

    def __init__(self, version: str, engine: Engine, lineage: dict, labels: list, settings: dict,
                 embedder: Engine | None = None) -> None:  # fmt: skip
        self.version, self.engine, self.lineage, self.labels, self.settings = version, engine, lineage, labels, settings
        self.embedder = embedder or engine  # what /embed runs: the designated embedding model, or the model itself
        embedding = settings.get("embedding")
        self.embedding_model = embedding["name"] if embedding else f"{version} (its own encoder)"

    @classmethod
    def load(cls, path, version: str, settings: dict, head) -> Served:
        model = Engine(str(path), settings, head)
        lineage = json.loads((Path(path) / "lineage.json").read_text())
        config = model.config
        labels = [config.id2label[i] for i in range(config.num_labels)] if settings["task"] != "qa" else []
        embedder = cls._embedder(path, settings) if settings.get("embedding") else None
        return cls(version, model, lineage, labels, settings, embedder)

    @classmethod
    def load_embedder(cls, path, version: str, settings: dict) -> Served:
        """An embedding-only version: its designated embedding model is all it serves."""
        lineage = json.loads((Path(path) / "lineage.json").read_text())
        embedder = cls._embedder(path, settings)
        return cls(version, embedder, lineage, [], settings, embedder)

    @staticmethod
    def _embedder(path, settings: dict) -> Engine:
        """/embed's designated model (settings["embedding"]), on the runtime its export check chose."""
        from transformers import AutoModel

        embedding = settings["embedding"]
        own = {**settings, "runtime": embedding["runtime"], "onnx_files": embedding["onnx_files"]}
        return Engine(str(Path(path) / embedding["folder"]), own, AutoModel, runtime_override=False)


class Engine:
    """The model on the chosen runtime, and the request encoding shared with training."""

    def __init__(self, path: str, settings: dict, head, runtime_override: bool = True) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer

        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.model_max_length = 10**9  # bertops_encoding truncates, and says which texts it cut
        self.tokenizer_lock = threading.Lock()
        self.max_length = settings["max_length"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # The runtime the gate judged is the one served. BERTOPS_SERVE_RUNTIME picks another at start
        # only together with BERTOPS_SERVE_UNJUDGED=1 (benchmarks, debugging), and /metadata then says
        # "judged": false; an ONNX runtime that failed its agreement check is never served.
        judged = settings.get("runtime") or settings.get("cpu_runtime") or "torch"  # cpu_runtime: older Bentos
        runtime = (os.environ.get("BERTOPS_SERVE_RUNTIME") if runtime_override else None) or judged
        if runtime != judged and os.environ.get("BERTOPS_SERVE_UNJUDGED") != "1":
            raise RuntimeError(
                f"runtime {runtime!r} was not judged by the gate for this model (it judged {judged!r}); "
                "set BERTOPS_SERVE_UNJUDGED=1 as well to serve it anyway (benchmarks, debugging)"
            )
        if runtime != "torch" and runtime not in settings["onnx_files"]:
            raise RuntimeError(
                f"runtime {runtime!r} is not servable for this model: it is unknown or failed its "
                f"agreement check (servable: torch, {', '.join(settings['onnx_files'])})"
            )
        self.judged = runtime == judged
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.lanes = settings["serve"].get("lanes") or (1 if self.device == "cuda" else cores)
        threads = max(1, cores // self.lanes)  # each lane's share of the cores
        self.call_tokens = call_cost_tokens(settings["serve"].get("group_call_tokens"), self.device, runtime, threads)
        self.runtime = runtime
        self.config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        if runtime == "torch":
            if self.device == "cpu":
                torch.set_num_threads(threads)
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
            options.intra_op_num_threads = threads
            file = settings["onnx_files"][runtime]
            self.session = ort.InferenceSession(str(Path(path) / file), options, providers=["CPUExecutionProvider"])

    def encode(self, inputs: list):
        """Texts, or [first, second] pairs -> (model feeds, which inputs were cut): normalised and
        truncated by `bertops_encoding`, exactly as `prepare` did for training."""
        normalised = [
            encoding.normalize_input(x, self.settings["unicode_form"], self.settings["lowercase"]) for x in inputs
        ]
        with self.tokenizer_lock:  # a fast tokenizer is not safe to call from two lanes at once
            encoded = encoding.encode(self.tokenizer, normalised, self.max_length)
        return encoding.to_feeds(
            encoded.input_ids, encoded.token_type_ids, self.tokenizer.pad_token_id
        ), encoded.truncated

    def run(self, feeds: dict, output: str | tuple[str, ...] = "logits", per_token: bool = False):
        """output: "logits" or "embedding" (mean of the encoder's token states), one row per input,
        or a tuple of them (one forward pass, a tuple of arrays back).
        A batch runs as groups of similar length, each cut to its own longest row (as training
        buckets its batches): the padding a batch of mixed lengths would compute is skipped.
        per_token: outputs with a sequence axis (token tagging) run as one padded call."""
        outputs = (output,) if isinstance(output, str) else output
        if per_token:
            return self._run(feeds, outputs)[0]
        lengths = feeds["attention_mask"].sum(axis=1)
        groups = length_groups(lengths, self.call_tokens)
        if len(groups) == 1 and int(lengths.max()) == feeds["attention_mask"].shape[1]:
            values = self._run(feeds, outputs)
        else:
            values = []
            for index in groups:
                width = int(lengths[index].max())
                part = self._run({k: v[index, :width] for k, v in feeds.items()}, outputs)
                if not values:
                    values = [np.empty((len(lengths), *p.shape[1:]), dtype=p.dtype) for p in part]
                for whole, piece in zip(values, part):
                    whole[index] = piece
        return values[0] if isinstance(output, str) else tuple(values)

    def _run(self, feeds: dict, outputs: tuple[str, ...]) -> list:
        import torch

        if self.runtime != "torch":
            return self.session.run(list(outputs), feeds)
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode(), torch.autocast(self.device, dtype=self.dtype, enabled=self.dtype is not None):
            values = {}
            if "logits" in outputs:  # one forward pass; its last hidden states give the embedding too
                out = self.model(**tensors, output_hidden_states="embedding" in outputs)
                values["logits"] = out.logits.float().cpu().numpy()
                hidden = out.hidden_states[-1] if "embedding" in outputs else None
            else:
                hidden = self.model.base_model(**tensors).last_hidden_state
            if "embedding" in outputs:
                mask = tensors["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                values["embedding"] = pooled.cpu().numpy()
            return [values[name] for name in outputs]

    def forward(self, feeds: dict):
        """The torch model's whole output (heads with several outputs, e.g. start/end logits)."""
        import torch

        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode():
            return self.model(**tensors)
