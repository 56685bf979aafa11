"""The bertops production endpoint (BentoML 1.4).

- `POST /classify`: texts (or [first, second] pairs for a sentence-pair model such as RTE) ->
  label, probability per label, model version, and whether the input was truncated to the
  model's maximum length; `POST /embed`: texts -> one sentence embedding each
  (mean of the encoder's token states; L2-normalised when `serve.normalize_embeddings`). Both
  batch adaptively (`batchable=True`, `serve.max_batch_size`, `serve.max_latency_ms`).
- `POST /tag` (ner models, instead of /classify): raw texts -> entities, each with its type,
  surface text, [start, end) character offsets into the text and a score.
- `POST /answer` (qa models): {"questions": [{"question", "context"}]} -> the best answer span
  of each context (text, character offsets, score); long contexts are read in doc-stride windows.
- `GET /metadata`: model version, runtime, lineage, labels, max sequence length.
- BentoML adds `/healthz`, `/livez`, `/readyz` and `/metrics` (Prometheus: BentoML's own series
  plus `bertops_requests_total{endpoint,outcome}`, `bertops_batch_size`, `bertops_inference_seconds`,
  `bertops_truncated_texts_total`).
- Optional bearer-token authentication: when the environment variable named by
  `serve.api_token_env` is set for the server, every path but the health probes needs
  `Authorization: Bearer <token>` (401 otherwise).

Runtime: ONNX Runtime (int8 or fp32, checked against PyTorch by `bertops package`) on CPU; the
PyTorch model with bf16/fp16 autocast on a GPU. `bertops package` writes `bertops_serving.json`
beside this file (the model tag and the serving settings) and builds a Bento from this folder.
This file needs no bertops code: a Bento runs anywhere its requirements are installed.
"""
from __future__ import annotations

import hmac
import json
import os
import time
import unicodedata
from pathlib import Path
from typing import Annotated

import bentoml
from fastapi import FastAPI
from pydantic import BaseModel, Field

with bentoml.importing():
    import numpy as np
    import torch
    from transformers import (AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer)

_SETTINGS_FILE = Path(__file__).with_name("bertops_serving.json")
if not _SETTINGS_FILE.is_file():
    raise RuntimeError(f"{_SETTINGS_FILE} is missing: build the service with `bertops package`, not by hand")
SETTINGS = json.loads(_SETTINGS_FILE.read_text())
SERVE = SETTINGS["serve"]
TASK = SETTINGS.get("task", "classification")  # "ner" serves POST /tag instead of /classify
if TASK == "ner":
    import bertops_ner  # word splitting and entity spans; a copy of bertops/tasks/ner.py put here by `bertops package`
if TASK == "qa":
    import bertops_qa  # doc-stride windows and span post-processing; a copy of bertops/tasks/qa.py
OPEN_PATHS = ("/healthz", "/livez", "/readyz")  # probes stay open when a token is required
API_PATHS = ("/classify", "/tag", "/answer", "/embed", "/metadata", "/metrics")

Text = Annotated[str, Field(min_length=1, max_length=SERVE["max_text_chars"], pattern=r"\S",
                            description="one non-blank text")]
Texts = Annotated[list[Text], Field(min_length=1, max_length=SERVE["max_texts_per_request"])]
# A sentence-pair model (e.g. RTE) classifies [first, second] pairs; anything else is a 400 from
# the request's own validation (never a failure of the adaptive batch it would have joined).
TEXT_PAIRS = bool(SETTINGS.get("text_pairs"))
TextPair = Annotated[list[Text], Field(min_length=2, max_length=2, description="[first sentence, second sentence]")]


class Question(BaseModel):
    """One extractive-QA request item: the answer is a span of `context`."""
    question: Text
    context: Annotated[str, Field(min_length=1, max_length=SERVE["max_text_chars"], pattern=r"\S")]


Questions = Annotated[list[Question], Field(min_length=1, max_length=SERVE["max_texts_per_request"])]
ClassifyInputs = Annotated[list[TextPair] if TEXT_PAIRS else list[Text],
                           Field(min_length=1, max_length=SERVE["max_texts_per_request"])]

info_app = FastAPI()  # read-only GET routes beside BentoML's POST APIs (mounted as an ASGI app)


class _Metrics:
    """bertops' Prometheus series, created in the worker (after BentoML set up multiprocess mode)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter("bertops_requests_total", "HTTP requests by endpoint and outcome",
                                ["endpoint", "outcome"])
        self.batch_size = Histogram("bertops_batch_size", "texts per model call (after adaptive batching)",
                                    ["endpoint"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.inference = Histogram("bertops_inference_seconds", "seconds per model call", ["endpoint"],
                                   buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.truncated = Counter("bertops_truncated_texts_total", "texts truncated to the model's max length")


_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


class Guard:
    """ASGI middleware: bearer-token check (when configured) and request counts by outcome."""

    def __init__(self, app) -> None:
        self.app = app
        token = os.environ.get(SERVE["api_token_env"] or "", "")
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in API_PATHS + OPEN_PATHS else "other"
        if self.token is not None and path not in OPEN_PATHS and not self._authorized(scope):
            return await self._refuse(send, endpoint, 401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                      [(b"www-authenticate", b"Bearer")])
        if scope.get("method") == "POST" and path in ("/classify", "/tag", "/answer", "/embed") and not self._json(scope):
            return await self._refuse(send, endpoint, 415, "send the texts as JSON with 'Content-Type: application/json', "
                                                          'e.g. {"texts": ["a text"]}')
        status = {}

        async def watch(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            code = status.get("code", 500)
            metrics().requests.labels(endpoint, f"{code // 100}xx").inc()

    @staticmethod
    async def _refuse(send, endpoint: str, status: int, message: str, headers: list | None = None) -> None:
        metrics().requests.labels(endpoint, f"{status // 100}xx").inc()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *(headers or [])]})
        await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})

    @staticmethod
    def _json(scope) -> bool:
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        return content_type.split(b";")[0].strip().lower() == b"application/json"

    def _authorized(self, scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, credentials = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)


class Engine:
    """Tokenize (with explicit truncation, so each text can say whether it was cut) and run the
    model on the chosen runtime."""

    def __init__(self, path: str) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.model_max_length = 10**9  # we truncate ourselves, below
        self.max_length = SETTINGS["max_length"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # BERTOPS_SERVE_RUNTIME overrides the packaged choice at start (ops, benchmarks); an ONNX
        # runtime is only served if it passed its agreement check at package time.
        runtime = os.environ.get("BERTOPS_SERVE_RUNTIME") or SERVE["runtime"]
        if runtime == "auto":
            runtime = "torch" if self.device == "cuda" else SETTINGS["cpu_runtime"]
        if runtime != "torch" and runtime not in SETTINGS["onnx_files"]:
            raise RuntimeError(f"runtime {runtime!r} is not servable for this model: it is unknown or failed its "
                               f"agreement check at package time (servable: torch, {', '.join(SETTINGS['onnx_files'])})")
        self.runtime = runtime
        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        self.labels = [config.id2label[i] for i in range(config.num_labels)] if TASK != "qa" else []
        if runtime == "torch":
            head = {"ner": AutoModelForTokenClassification, "qa": AutoModelForQuestionAnswering}.get(
                TASK, AutoModelForSequenceClassification)
            self.model = head.from_pretrained(
                path, trust_remote_code=True, attn_implementation="sdpa"  # the head's code is inside the folder
            ).to(self.device).eval()
            self.dtype = None
            if self.device == "cuda":
                self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            file = SETTINGS["onnx_files"][runtime]
            self.session = ort.InferenceSession(str(Path(path) / file), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list) -> tuple[dict[str, np.ndarray], list[bool]]:
        """Texts, or [first, second] pairs ([CLS] a [SEP] b [SEP], segment ids 0/1; the longer
        sentence is cut first, as in training)."""
        pairs = bool(texts) and isinstance(texts[0], (list, tuple))
        if pairs:
            firsts, seconds = [p[0] for p in texts], [p[1] for p in texts]
            full = self.tokenizer(firsts, seconds)["input_ids"]
            encoded = self.tokenizer(firsts, seconds, truncation="longest_first", max_length=self.max_length)
            ids, types = encoded["input_ids"], encoded["token_type_ids"]
            truncated = [len(row) > self.max_length for row in full]
        else:
            ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
            truncated = [len(row) > self.max_length for row in ids]
            ids = [row[: self.max_length - 1] + row[-1:] if cut else row for row, cut in zip(ids, truncated)]
            types = [[0] * len(row) for row in ids]
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        token_types = np.zeros((len(ids), width), dtype=np.int64)
        for i, (row, segment) in enumerate(zip(ids, types)):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
            token_types[i, : len(row)] = segment
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_types}, truncated

    def encode_words(self, texts: list[str]) -> tuple[dict[str, np.ndarray], list, list[bool]]:
        """Raw texts -> CoNLL-style words with character offsets -> word pieces (for /tag)."""
        words = [bertops_ner.split_words(t) for t in texts]
        encoded = self.tokenizer([[w for w, _, _ in row] or [""] for row in words], is_split_into_words=True,
                                 truncation=True, max_length=self.max_length, padding=True, return_tensors="np")
        word_ids = [encoded.word_ids(i) for i in range(len(texts))]
        truncated = [len({w for w in ids if w is not None}) < len(row) for ids, row in zip(word_ids, words)]
        feeds = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        return feeds, list(zip(words, word_ids)), truncated

    def run(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        """output: "logits" or "embedding" (mean of the encoder's token states)."""
        if self.runtime != "torch":
            return self.session.run([output], feeds)[0]
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with torch.inference_mode(), torch.autocast(self.device, dtype=self.dtype, enabled=self.dtype is not None):
            if output == "logits":
                return self.model(**tensors).logits.float().cpu().numpy()
            hidden = self.model.base_model(**tensors).last_hidden_state.float()
            mask = tensors["attention_mask"].unsqueeze(-1).float()
            return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu().numpy()


def normalize(text: str) -> str:
    """The same normalisation `bertops prepare` applied to the training text."""
    text = " ".join(unicodedata.normalize(SETTINGS["unicode_form"], text).split())
    return text.lower() if SETTINGS["lowercase"] else text


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


@bentoml.service(name="bertops", traffic={"timeout": 60}, workers=SERVE["workers"])
@bentoml.asgi_app(info_app, path="/")
class Classifier:
    # Declared as a class attribute so that `bentoml build` packages the model into the Bento.
    model_ref = bentoml.models.BentoModel(SETTINGS["model_tag"])

    def __init__(self) -> None:
        path = self.model_ref.path
        self.engine = Engine(path)
        self.labels = self.engine.labels
        self.version = str(self.model_ref.tag)
        self.lineage = json.loads((Path(path) / "lineage.json").read_text())

    def _infer(self, endpoint: str, texts: list, output: str) -> tuple[np.ndarray, list[bool]]:
        started = time.perf_counter()
        feeds, truncated = self.engine.encode([[normalize(x) for x in t] if isinstance(t, list) else normalize(t)
                                               for t in texts])
        values = self.engine.run(feeds, output)
        m = metrics()
        m.batch_size.labels(endpoint).observe(len(texts))
        m.inference.labels(endpoint).observe(time.perf_counter() - started)
        if any(truncated):
            m.truncated.inc(sum(truncated))
        return values, truncated

    if TASK == "ner":
        @bentoml.api(batchable=True, max_batch_size=SERVE["max_batch_size"], max_latency_ms=SERVE["max_latency_ms"])
        def tag(self, texts: Texts) -> list[dict]:
            """Named entities in each raw text: type, surface text, [start, end) character offsets, score."""
            started = time.perf_counter()
            feeds, aligned, truncated = self.engine.encode_words(texts)
            logits = self.engine.run(feeds, "logits")
            m = metrics()
            m.batch_size.labels("/tag").observe(len(texts))
            m.inference.labels("/tag").observe(time.perf_counter() - started)
            if any(truncated):
                m.truncated.inc(sum(truncated))
            out = []
            for text, row, (words, word_ids), cut in zip(texts, logits, aligned, truncated):
                ids, scores = bertops_ner.word_scores(row, word_ids, num_words=len(words))
                tags = [self.labels[i] for i in ids]
                entities = bertops_ner.spans_to_entities(text, words, tags, scores) if words else []
                out.append({"entities": [{**e, "score": round(e["score"], 6)} for e in entities],
                            "model_version": self.version, "truncated": cut})
            return out

    if TASK == "qa":
        @bentoml.api(batchable=True, max_batch_size=SERVE["max_batch_size"], max_latency_ms=SERVE["max_latency_ms"])
        def answer(self, questions: Questions) -> list[dict]:
            """The best answer span of each context: text, [start, end) character offsets, score."""
            started = time.perf_counter()
            examples = [bertops_qa.QAExample(str(i), "", q.context, q.question, []) for i, q in enumerate(questions)]
            features = bertops_qa.build_features(self.engine.tokenizer, examples, self.engine.max_length,
                                                 SETTINGS["doc_stride"], SETTINGS["max_query_length"], training=False)
            ids = [f["input_ids"] for f in features]
            width = max(len(row) for row in ids)
            feeds = {k: np.zeros((len(ids), width), dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            feeds["input_ids"][:] = self.engine.tokenizer.pad_token_id
            for i, f in enumerate(features):
                n = len(f["input_ids"])
                feeds["input_ids"][i, :n], feeds["attention_mask"][i, :n] = f["input_ids"], 1
                feeds["token_type_ids"][i, :n] = f["token_type_ids"]
            tensors = {k: torch.from_numpy(v).to(self.engine.device) for k, v in feeds.items()}
            with torch.inference_mode():
                out = self.engine.model(**tensors)
            starts, ends = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            predictions = bertops_qa.postprocess(examples, features, list(starts), list(ends),
                                                 max_answer_length=SETTINGS["max_answer_tokens"])
            m = metrics()
            m.batch_size.labels("/answer").observe(len(questions))
            m.inference.labels("/answer").observe(time.perf_counter() - started)
            return [{**predictions[e.id], "score": round(predictions[e.id]["score"], 6), "model_version": self.version,
                     "windows": sum(f["example_index"] == i for f in features)} for i, e in enumerate(examples)]

    @bentoml.api(batchable=True, max_batch_size=SERVE["max_batch_size"], max_latency_ms=SERVE["max_latency_ms"])
    def classify(self, texts: ClassifyInputs) -> list[dict]:
        """Label and per-label probabilities for each text, or each [first, second] pair for a
        sentence-pair model (the model version answers too)."""
        if TASK != "classification":
            raise bentoml.exceptions.InvalidArgument(f"this is a {TASK} model: POST {'/tag' if TASK == 'ner' else '/answer'}")
        probs, truncated = self._infer("/classify", texts, "logits")
        probs = _softmax(probs)
        return [
            {"label": self.labels[int(np.argmax(p))],
             "probabilities": {name: round(float(v), 6) for name, v in zip(self.labels, p)},
             "model_version": self.version, "truncated": cut}
            for p, cut in zip(probs, truncated)
        ]

    @bentoml.api(batchable=True, max_batch_size=SERVE["max_batch_size"], max_latency_ms=SERVE["max_latency_ms"])
    def embed(self, texts: Texts) -> list[dict]:
        """One sentence embedding per text: the mean of the encoder's token states."""
        vectors, truncated = self._infer("/embed", texts, "embedding")
        if SERVE["normalize_embeddings"]:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12, None)
        return [{"embedding": [round(float(x), 6) for x in v], "model_version": self.version, "truncated": cut,
                 "normalized": SERVE["normalize_embeddings"]} for v, cut in zip(vectors, truncated)]

    @info_app.get("/metadata")
    def metadata(self) -> dict:
        """The model version, runtime, lineage, label map and max sequence length."""
        return {"model_version": self.version, "runtime": self.engine.runtime, "labels": self.labels,
                "max_length": self.engine.max_length, "max_texts_per_request": SERVE["max_texts_per_request"],
                "input": "[first, second] sentence pairs" if TEXT_PAIRS else "texts", "task": TASK,
                "embedding_normalized": SERVE["normalize_embeddings"],
                "lineage": {k: v for k, v in self.lineage.items() if k != "params"}}


Classifier.add_asgi_middleware(Guard)
