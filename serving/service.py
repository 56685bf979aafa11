"""The bertops production endpoint (BentoML 1.4): one service class per task over a shared engine
(engine.py); `bertops package` builds the Bento with the class of the model's task.

- `Classification`: `POST /classify`: texts (or [first, second] pairs for a sentence-pair model
  such as RTE) -> label, probability per label, model version, and whether the input was
  truncated to the model's maximum length.
- `TokenTagging` (ner models): `POST /tag`: raw texts -> entities, each with its type, surface
  text, [start, end) character offsets into the text and a score.
- `QuestionAnswering` (qa models): `POST /answer`: {"questions": [{"question", "context"}]} -> the
  best answer span of each context (text, character offsets, score); long contexts are read in
  doc-stride windows.
- `Embedding` (embedding-only versions, `bertops package --embedding-only`): no task route; the
  routes below, served by the version's encoder.
- Every service: `POST /embed`: texts -> one sentence embedding each (mean of the encoder's token
  states; L2-normalised when `serve.normalize_embeddings`); `POST /tokenize`: texts -> the token
  ids the model is fed (normalised and cut as in training); `GET /metadata`: model version,
  runtime, public lineage, labels, max sequence length. The POST APIs batch opportunistically
  (engine.Batcher): a request runs at once when the model is idle, and requests that arrive
  while it is busy run together as the next call (up to `serve.max_batch_size` inputs); more than
  `serve.max_queued_texts` waiting is a 503. Bodies over `serve.max_body_bytes` are a 413.
- BentoML adds `/healthz`, `/livez`, `/readyz` and `/metrics` (Prometheus: BentoML's own series
  plus `bertops_requests_total{endpoint,outcome}`, `bertops_batch_size`, `bertops_inference_seconds`,
  `bertops_truncated_texts_total`).
- Optional bearer-token authentication: when the environment variable named by
  `serve.api_token_env` is set for the server, every path but the health probes needs
  `Authorization: Bearer <token>` (401 otherwise).

Runtime: ONNX Runtime (int8 or fp32, checked against PyTorch by `bertops package`) on CPU; the
PyTorch model with bf16/fp16 autocast on a GPU. The model tag and the request schema (size
limits, texts or pairs) are fixed when the Bento is built, from `bertops_serving.json`; everything
else is read when a service starts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Annotated

import bentoml
import bertops_window
import engine
from pydantic import BaseModel, Field

with bentoml.importing():
    import numpy as np
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

SETTINGS = engine.load_settings()
SERVE = SETTINGS["serve"]
Text = engine.text_type(SERVE["max_text_chars"])
Texts = engine.batch_type(Text, SERVE["max_texts_per_request"])
PAIRS = bool(SETTINGS.get("text_pairs"))


class Question(BaseModel):
    """One extractive-QA request item: the answer is a span of `context`."""

    question: Text
    context: Text


_running: dict = {}  # the service instance of this worker (one per process), for GET /metadata

# Set by `bertops serve`: the endpoint follows the registry (bertops.follow) and loads each
# production version from the model store; a Bento started on its own serves its packaged model.
FOLLOW = SETTINGS.get("follow")


def _describe() -> dict:
    return _running["service"].describe()


def _reload() -> dict:
    return _running["service"].reload()


async def _embed_texts(texts: list) -> tuple[list, str, int]:
    return await _running["service"].embed_texts(texts)


def _window(version: str | None, last: int | None) -> dict:
    return _running["service"].window(version, last)


def _drift(report: dict) -> None:
    _running["service"].record_drift(report)


def _info_app():
    return engine.info_app(_describe, _reload, _embed_texts, _window, _drift)


class Endpoint:
    """What every task's service shares: the model, /embed and /metadata.

    `self.model` (an engine.Served: version, engine, lineage, labels, settings) is swapped whole
    when the registry's production version changes; each request batch reads it once, so it runs
    and answers on one version from start to end."""

    if not FOLLOW:
        model_ref = bentoml.models.BentoModel(SETTINGS["model_tag"])  # a class attribute: packaged into the Bento
    head = AutoModelForSequenceClassification
    route = ""

    def __init__(self) -> None:
        self.settings = engine.load_settings()
        if FOLLOW:
            path, version = FOLLOW["model_path"], FOLLOW["version"]
        else:
            path, version = self.model_ref.path, str(self.model_ref.tag)
        self.model = self.load(path, self._label(version), self.settings)
        self.trials: dict[str, engine.Served | None] = {"canary": None, "shadow": None}
        self.canary_share = engine.Share()
        self.shadow = engine.Shadow(self.agreement_key)
        self._batchers: dict[tuple[str, str], engine.Batcher] = {}
        monitor = self.settings["serve"]["monitor"]  # drift monitoring's live side (off: nothing is kept)
        self.windows = bertops_window.Windows(monitor["window"]) if monitor["enabled"] else None
        self.sampler = (
            bertops_window.Sampler(monitor["sample_rate"], Path(monitor["sample_dir"]))
            if monitor["enabled"] and monitor["sample_rate"] > 0 and monitor["sample_dir"]
            else None
        )
        self.shards = self._shards(monitor)
        self.last_drift: dict | None = None
        self.follower = None
        self.watch = None
        if FOLLOW:
            from bertops.events import announce
            from bertops.follow import CanaryWatch, Follower
            from bertops.model_store import ModelStore
            from bertops.registry import Registry

            registry = Registry(os.environ["BERTOPS_REGISTRY_URL"], on_event=announce)  # e.g. an automatic withdrawal
            store = ModelStore(os.environ["BERTOPS_STORE_URL"], Path(os.environ["BERTOPS_CACHE"]))
            self.watch = CanaryWatch(**self.settings["serve"]["canary"])
            self.follower = Follower(
                FOLLOW["model"], registry, store, self, FOLLOW["version"], self.settings["serve"]["poll_s"], self.watch
            )
            self.follower.check()  # a canary or shadow already running is joined at once
            self.follower.start()
        _running["service"] = self

    @staticmethod
    def _label(version: str) -> str:
        return version if ":" in version else f"{FOLLOW['model']}:{version}"

    def load(self, path, version: str, settings: dict) -> engine.Served:
        """Load and warm a model (the first request it answers pays no start-up cost)."""
        served = engine.Served.load(path, version, settings, self.head)
        self.warm(served)
        return served

    def warm(self, served: engine.Served) -> None:
        feeds, _ = served.engine.encode(["warm up"])
        served.engine.run(feeds, "logits")

    def _load_version(self, version: str, path) -> engine.Served:
        settings = {**json.loads((Path(path) / engine.SETTINGS_FILE.name).read_text()), "serve": self.settings["serve"]}
        for key in ("task", "text_pairs"):  # the request schema is fixed when the service starts
            if settings.get(key) != self.settings.get(key):
                raise RuntimeError(
                    f"{version} needs {key}={settings.get(key)!r} but this endpoint serves {key}="
                    f"{self.settings.get(key)!r}; start a new endpoint for it"
                )
        return self.load(path, self._label(version), settings)

    def switch(self, version: str, path: Path) -> None:
        """Load `version` beside the current model, warm it, then swap (bertops.follow calls this)."""
        self.model = self._load_version(version, path)  # one reference: the switch is atomic

    def set_trial(self, role: str, version: str | None, path, percent: float | None) -> None:
        """Start (version given) or end (None) the canary or the shadow (bertops.follow calls this)."""
        self.trials[role] = self._load_version(version, path) if version else None
        if role == "canary":
            self.canary_share.set(percent or 0.0)

    def served(self, which: str) -> engine.Served:
        """The model a batch of `which` lane runs on (production when its trial just ended)."""
        return self.trials.get(which) or self.model if which != "production" else self.model

    @staticmethod
    def agreement_key(answer: dict):
        """What must match for the shadow to agree with production (scores may differ)."""
        return engine.without(answer, ("model_version", "probabilities", "score", "embedding"))

    def reload(self) -> dict:
        if self.follower is None:
            raise engine.NotFollowing(
                "this endpoint serves its packaged model; start it with `bertops serve` to follow the registry"
            )
        return self.follower.check(retry_refused=True)

    def _batcher(self, route: str, which: str, run) -> engine.Batcher:
        if (route, which) not in self._batchers:
            serve = self.settings["serve"]
            self._batchers[route, which] = engine.Batcher(
                lambda items: run(items, which), serve["max_batch_size"], serve["max_queued_texts"],
                lanes=self.model.engine.lanes,
            )  # fmt: skip
        return self._batchers[route, which]

    async def batched(self, route: str, run, items: list) -> list:
        """`run(items, which)` through the batcher of this route and lane (engine.Batcher: a lone
        request never waits); an overloaded queue is a 503 with the reason. The canary's share of
        requests runs on the canary; with a shadow, the task route's requests run on it too, in the
        background, and only its agreement with production is kept."""
        which = "canary" if self.trials["canary"] is not None and self.canary_share.take() else "production"
        version = self.served(which).version
        started = time.perf_counter()
        try:
            answers = await self._batcher(route, which, run).submit(items)
        except engine.Overloaded as exc:
            raise bentoml.exceptions.ServiceUnavailable(str(exc)) from None
        except Exception:
            self._record(version, time.perf_counter() - started, ok=False)
            engine.metrics().failures.labels(route, version).inc()
            raise
        self._record(version, time.perf_counter() - started, ok=True)
        engine.metrics().answers.labels(route, answers[0]["model_version"] if answers else version).inc()
        if which == "production" and route == self.route and self.trials["shadow"] is not None:
            self.shadow.submit(route, lambda: self._batcher(route, "shadow", run), items, answers)
        return answers

    def _record(self, version: str, seconds: float, ok: bool) -> None:
        if self.watch is not None and self.trials["canary"] is not None:
            self.watch.record(version, seconds, ok)

    def describe(self) -> dict:
        m = self.model
        return {
            "model_version": m.version,
            "runtime": m.engine.runtime,
            "runtime_judged_by_gate": m.engine.judged,
            "lanes": m.engine.lanes,
            "labels": m.labels,
            "max_length": m.engine.max_length,
            "max_texts_per_request": SERVE["max_texts_per_request"],
            "input": "[first, second] sentence pairs" if PAIRS else "texts",
            "task": m.settings["task"],
            "embedding_normalized": SERVE["normalize_embeddings"],
            "embedding_model": m.embedding_model,
            "lineage": engine.public_lineage(m.lineage),  # public fields only: docs/operations.md
            "follow": self.follower.status() if self.follower else None,
            "shadow": self.shadow.summary() if self.trials["shadow"] is not None else None,
            "monitor": None
            if self.windows is None
            else {
                "windows": self.windows.summary(),
                "shared_as": self.shards.worker if self.shards is not None else None,
                "sampling": self.sampler is not None,
                "last_drift": self.last_drift,
            },
        }

    def _infer(self, m: engine.Served, endpoint: str, inputs: list, output, on: engine.Engine | None = None):
        """`output` (a name or a tuple of names) for `inputs` on `m`'s model (or on `on`, e.g. its
        embedding model), timed and counted -> (values, which inputs were cut). A task's service
        (its own or one defined elsewhere) calls this."""
        values, truncated, _ = self._infer_fed(m, endpoint, inputs, output, on)
        return values, truncated

    def _infer_fed(self, m: engine.Served, endpoint: str, inputs: list, output, on: engine.Engine | None = None):
        """`_infer`, also returning the feeds the model was given (what drift monitoring measures)."""
        on = on or m.engine
        started = time.perf_counter()
        feeds, truncated = on.encode(inputs)
        values = on.run(feeds, output)
        engine.metrics().observe(endpoint, m.version, len(inputs), time.perf_counter() - started, sum(truncated))
        return values, truncated, feeds

    def keep_window(
        self, m: engine.Served, feeds: dict, truncated: list, probabilities, embeddings, inputs, answers
    ) -> None:
        """Keep what drift monitoring compares (bertops_window), and a sample of requests when asked;
        a failure here is logged, never a failed request."""
        try:
            features = bertops_window.text_features(
                feeds["input_ids"], feeds["attention_mask"], m.engine.tokenizer.unk_token_id, truncated
            )
            if probabilities is not None:
                features.update(bertops_window.answer_features(probabilities))
            self.windows.record(m.version, features, embeddings)
            engine.metrics().observe_window(m.version, features, m.labels)
            if self.sampler is not None:
                self.sampler.offer(m.version, inputs, answers)
        except Exception:  # noqa: BLE001 - monitoring never fails serving
            logging.getLogger("bertops.monitor").exception("could not record the batch for drift monitoring")

    def _shards(self, monitor: dict) -> bertops_window.Shards | None:
        """This worker's share of the endpoint's windows, in the model store (an endpoint that follows
        the registry has one; a Bento served on its own keeps its windows to itself)."""
        store = os.environ.get("BERTOPS_STORE_URL")
        if self.windows is None or not store or not monitor.get("share", True):
            return None
        worker = f"{socket.gethostname()}-{os.getpid()}"
        shards = bertops_window.Shards(
            store, worker, monitor.get("share_every_s", 10.0), monitor.get("share_max_age_s", 120.0)
        )
        threading.Thread(target=self._publish_windows, args=(shards,), name="bertops-windows", daemon=True).start()
        return shards

    def _publish_windows(self, shards: bertops_window.Shards) -> None:
        failing = ""
        while True:
            time.sleep(shards.every_s)
            try:
                served = {m.version for m in self._served()}
                shards.publish(self.windows, time.time(), served)  # a version no longer served is left to age out
                failing = ""
            except Exception as exc:  # noqa: BLE001 - monitoring never fails serving; said once per new error
                if str(exc) != failing:
                    logging.getLogger("bertops.monitor").warning("could not share the drift window: %s", exc)
                failing = str(exc)

    def _served(self) -> list:
        """The versions this worker serves: the production model, then its canary and shadow."""
        return [m for m in (self.model, *self.trials.values()) if m is not None]

    def _shared_window(self, version: str, last: int | None) -> tuple[dict, dict] | None:
        """(rows, summary) of `version` over every worker's fresh shard, this worker's written first;
        None when there are none (or the store cannot be read: this worker's own window answers)."""
        now = time.time()
        try:
            self.shards.publish(self.windows, now, set(), force=version)
            shards = bertops_window.compatible(self.shards.fresh(version, now))  # those the merge keeps
            if not shards:
                return None
            rows = bertops_window.merge(shards, last)
        except Exception as exc:  # noqa: BLE001 - fall back to this worker's window
            logging.getLogger("bertops.monitor").warning("could not read the shared drift windows: %s", exc)
            return None
        workers = [{"worker": meta["worker"], "held": len(part["tokens"]), "seen": meta["seen"],
                    "age_s": round(now - meta["written_at"], 1)} for meta, part in shards]  # fmt: skip
        summary = {"held": sum(w["held"] for w in workers), "seen": sum(w["seen"] for w in workers), "workers": workers}
        return rows, summary

    def window(self, version: str | None, last: int | None) -> dict:
        version = version or self.model.version
        if ":" not in version:  # a bare version of this model
            version = f"{self.model.version.split(':')[0]}:{version}"
        if self.windows is None:
            raise LookupError("drift monitoring is off on this endpoint (serve.monitor.enabled: false)")
        shared = self._shared_window(version, last) if self.shards is not None else None
        if shared is not None:
            snapshot, summary = bertops_window.answered_only(shared[0]), shared[1]
        else:
            snapshot = self.windows.snapshot(version, last)
            summary = {**self.windows.summary().get(version, {}), "workers": None}
        if snapshot is None:
            raise LookupError(f"no requests of {version} recorded yet (recorded: {sorted(self.windows.summary())})")
        served = next((s for s in self._served() if s.version == version), None)
        return {
            "version": version,
            "labels": served.labels if served else self.model.labels,
            "inputs": len(snapshot["tokens"]),
            **summary,
            "columns": bertops_window.encode_arrays(snapshot),
        }

    def record_drift(self, report: dict) -> None:
        engine.metrics().set_drift(report["version"], report)
        self.last_drift = {k: report.get(k) for k in ("version", "verdict", "window", "drifted", "checked_at")}

    @bentoml.api
    def tokenize(self, texts: Texts) -> list[dict]:
        """The token ids the model is fed for each text (normalised and cut exactly as in training)."""
        feeds, truncated = self.model.engine.encode(texts)
        return [
            {"input_ids": [int(t) for t, m in zip(ids, mask) if m], "truncated": cut}
            for ids, mask, cut in zip(feeds["input_ids"], feeds["attention_mask"], truncated)
        ]

    @bentoml.api
    async def embed(self, texts: Texts) -> list[dict]:
        """One sentence embedding per text: the mean of the encoder's token states."""
        return await self.batched("/embed", self._embed, list(texts))

    async def embed_texts(self, texts: list) -> tuple[list, str, int]:
        """(vectors, the version that made them, tokens fed): /embed's work for POST /v1/embeddings."""
        rows = await self.batched("/embed", self._embed, texts)
        feeds, _ = self.model.embedder.encode(texts)  # what the model is fed, counted as the usage
        tokens = int(feeds["attention_mask"].sum())
        return [r["embedding"] for r in rows], rows[0]["model_version"], tokens

    def _embed(self, texts: list, which: str = "production") -> list[dict]:
        m = self.served(which)
        vectors, truncated = self._infer(m, "/embed", texts, "embedding", on=m.embedder)
        if SERVE["normalize_embeddings"]:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12, None)
        return [
            {
                "embedding": [round(float(x), 6) for x in v],
                "model_version": m.version,
                "embedding_model": m.embedding_model,
                "truncated": cut,
                "normalized": SERVE["normalize_embeddings"],
            }
            for v, cut in zip(vectors, truncated)
        ]


# A sentence-pair model (e.g. RTE) classifies [first, second] pairs; anything else is a 400 from
# the request's own validation (never a failure of the adaptive batch it would have joined).
TextPair = Annotated[list[Text], Field(min_length=2, max_length=2, description="[first sentence, second sentence]")]
ClassifyInputs = engine.batch_type(TextPair if PAIRS else Text, SERVE["max_texts_per_request"])
Questions = engine.batch_type(Question, SERVE["max_texts_per_request"])


@bentoml.service(name="bertops", traffic={"timeout": 60}, workers=SERVE["workers"])
@bentoml.asgi_app(_info_app(), path="/")
class Classification(Endpoint):
    route = "/classify"

    def __init__(self) -> None:
        super().__init__()
        import bertops_classification_core

        self.core = bertops_classification_core

    @bentoml.api
    async def classify(self, texts: ClassifyInputs) -> list[dict]:
        """Label and per-label probabilities for each text, or each [first, second] pair for a
        sentence-pair model (the model version answers too)."""
        return await self.batched("/classify", self._classify, list(texts))

    def _classify(self, texts: list, which: str = "production") -> list[dict]:
        m = self.served(which)
        inputs = [tuple(t) if isinstance(t, list) else t for t in texts]
        if self.windows is None:
            logits, truncated = self._infer(m, "/classify", inputs, "logits")
            return self._answers(m, self.core.softmax(logits), truncated)
        (logits, embeddings), truncated, feeds = self._infer_fed(m, "/classify", inputs, ("logits", "embedding"))
        probabilities = self.core.softmax(logits)
        answers = self._answers(m, probabilities, truncated)
        self.keep_window(m, feeds, truncated, probabilities, embeddings, texts, answers)
        return answers

    def _answers(self, m: engine.Served, probabilities, truncated) -> list[dict]:
        return [
            {**self.core.answer(p, m.labels), "model_version": m.version, "truncated": cut}
            for p, cut in zip(probabilities, truncated)
        ]


@bentoml.service(name="bertops", traffic={"timeout": 60}, workers=SERVE["workers"])
@bentoml.asgi_app(_info_app(), path="/")
class TokenTagging(Endpoint):
    route = "/tag"
    head = AutoModelForTokenClassification

    def __init__(self) -> None:
        super().__init__()
        import bertops_ner_core

        self.core = bertops_ner_core

    @bentoml.api
    async def tag(self, texts: Texts) -> list[dict]:
        """Named entities in each raw text: type, surface text, [start, end) character offsets, score."""
        return await self.batched("/tag", self._tag, list(texts))

    def _tag(self, texts: list, which: str = "production") -> list[dict]:
        started = time.perf_counter()
        m = self.served(which)
        words = [self.core.split_words(t) for t in texts]
        with m.engine.tokenizer_lock:  # shared by the lanes
            encoded = m.engine.tokenizer(
                [[w for w, _, _ in row] or [""] for row in words],
                is_split_into_words=True,
                truncation=True,
                max_length=m.engine.max_length,
                padding=True,
                return_tensors="np",
            )
        word_ids = [encoded.word_ids(i) for i in range(len(texts))]
        truncated = [len({w for w in ids if w is not None}) < len(row) for ids, row in zip(word_ids, words)]
        feeds = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        logits = m.engine.run(feeds, "logits", per_token=True)
        engine.metrics().observe("/tag", m.version, len(texts), time.perf_counter() - started, sum(truncated))
        out = []
        for text, row, row_words, ids_of_words, cut in zip(texts, logits, words, word_ids, truncated):
            ids, scores = self.core.word_scores(row, ids_of_words, num_words=len(row_words))
            tags = [m.labels[i] for i in ids]
            entities = self.core.spans_to_entities(text, row_words, tags, scores) if row_words else []
            out.append(
                {
                    "entities": [{**e, "score": round(e["score"], 6)} for e in entities],
                    "model_version": m.version,
                    "truncated": cut,
                }
            )
        if self.windows is not None:  # the input side (lengths, unknown pieces, truncation)
            self.keep_window(m, feeds, truncated, None, None, texts, out)
        return out


@bentoml.service(name="bertops", traffic={"timeout": 60}, workers=SERVE["workers"])
@bentoml.asgi_app(_info_app(), path="/")
class QuestionAnswering(Endpoint):
    route = "/answer"
    head = AutoModelForQuestionAnswering

    def __init__(self) -> None:
        import bertops_qa_core

        self.core = bertops_qa_core
        super().__init__()

    def warm(self, served: engine.Served) -> None:
        feeds, _ = served.engine.encode([("a question?", "a context")])
        served.engine.forward(feeds)

    @bentoml.api
    async def answer(self, questions: Questions) -> list[dict]:
        """The best answer span of each context: text, [start, end) character offsets, score."""
        return await self.batched("/answer", self._answer, list(questions))

    def _answer(self, questions: list, which: str = "production") -> list[dict]:
        started = time.perf_counter()
        m = self.served(which)
        settings = m.settings
        examples = [self.core.QAExample(str(i), "", q.context, q.question, []) for i, q in enumerate(questions)]
        with m.engine.tokenizer_lock:  # shared by the lanes
            features = self.core.build_features(
                m.engine.tokenizer,
                examples,
                m.engine.max_length,
                settings["doc_stride"],
                settings["max_query_length"],
                training=False,
            )
        feeds = engine.encoding.to_feeds(
            [f["input_ids"] for f in features],
            [f["token_type_ids"] for f in features],
            m.engine.tokenizer.pad_token_id,
        )
        out = m.engine.forward(feeds)
        starts, ends = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        predictions = self.core.postprocess(
            examples, features, list(starts), list(ends), max_answer_length=settings["max_answer_tokens"]
        )
        engine.metrics().observe("/answer", m.version, len(questions), time.perf_counter() - started)
        answers = [
            {
                **predictions[e.id],
                "score": round(predictions[e.id]["score"], 6),
                "model_version": m.version,
                "windows": sum(f["example_index"] == i for f in features),
            }
            for i, e in enumerate(examples)
        ]
        if self.windows is not None:  # the input side of each (question, context) pair, as the reference
            pairs = [(q.question, q.context) for q in questions]
            pair_feeds, cut = m.engine.encode(pairs)
            self.keep_window(m, pair_feeds, cut, None, None, [list(p) for p in pairs], answers)
        return answers


@bentoml.service(name="bertops", traffic={"timeout": 60}, workers=SERVE["workers"])
@bentoml.asgi_app(_info_app(), path="/")
class Embedding(Endpoint):
    """An embedding-only version: a sentence encoder, no task head (/embed, /v1/embeddings, /tokenize)."""

    route = "/embed"

    def load(self, path, version: str, settings: dict) -> engine.Served:
        served = engine.Served.load_embedder(path, version, settings)
        self.warm(served)
        return served

    def warm(self, served: engine.Served) -> None:
        feeds, _ = served.engine.encode(["warm up"])
        served.engine.run(feeds, "embedding")


for _service in (Classification, TokenTagging, QuestionAnswering, Embedding):
    _service.add_asgi_middleware(engine.guard(SETTINGS, _service.inner.route))
