"""What the endpoint keeps of what it is asked and what it answers, per model version, over the
last `size` inputs: the live side of drift monitoring.

Per input: its length in word pieces (with [CLS]/[SEP]), the share of its word pieces that are the
unknown token, whether it was truncated, and for a classifier the predicted label, the confidence
(the top probability) and the sentence embedding (the mean-pooled encoder state the head reads,
from the same forward pass). The same functions turn the evaluation split into a version's
reference profile at `package`, so both sides are measured alike.

Pure numpy, no bertops imports: `bertops package` copies this file into the Bento as
`bertops_window.py`. Recording a batch is a few array copies under a lock (no per-request
allocation beyond the batch's own columns); nothing here can fail a request.
"""

from __future__ import annotations

import base64
import threading

import numpy as np

# column -> dtype, as kept and as exchanged (GET /monitor/window, reference.npz)
COLUMNS = {
    "tokens": np.int16,
    "unknown_share": np.float32,
    "truncated": np.bool_,
    "label": np.int16,
    "confidence": np.float32,
}
EMBEDDING = "embedding"  # float16 rows (halves what a window costs; the tests need no more)


def text_features(input_ids: np.ndarray, attention_mask: np.ndarray, unk_id: int | None, truncated) -> dict:
    """Per input: tokens fed, unknown word-piece share (of the tokens between [CLS] and [SEP]), truncated."""
    tokens = attention_mask.sum(axis=1)
    if unk_id is None:
        unknown = np.zeros(len(tokens), dtype=np.float32)
    else:
        unknown = ((input_ids == unk_id) & (attention_mask > 0)).sum(axis=1) / np.maximum(tokens - 2, 1)
    return {
        "tokens": tokens.astype(np.int16),
        "unknown_share": unknown.astype(np.float32),
        "truncated": np.asarray(truncated, dtype=np.bool_),
    }


def answer_features(probabilities: np.ndarray) -> dict:
    """Per input: the predicted label (index) and the confidence (its probability)."""
    return {
        "label": probabilities.argmax(axis=1).astype(np.int16),
        "confidence": probabilities.max(axis=1).astype(np.float32),
    }


class Window:
    """A ring buffer of the last `size` inputs of one version (columns of COLUMNS, + embeddings)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.columns: dict[str, np.ndarray] = {name: np.zeros(size, dtype=dtype) for name, dtype in COLUMNS.items()}
        self.has_answers = np.zeros(size, dtype=np.bool_)
        self.embeddings: np.ndarray | None = None
        self.seen = 0  # inputs recorded since the window started (the buffer holds min(seen, size))

    def record(self, features: dict, embeddings: np.ndarray | None = None) -> None:
        n = len(features["tokens"])
        if n == 0:
            return
        if n > self.size:  # only the newest `size` fit
            features = {k: v[-self.size :] for k, v in features.items()}
            embeddings = None if embeddings is None else embeddings[-self.size :]
            self.seen += n - self.size
            n = self.size
        rows = (self.seen + np.arange(n)) % self.size
        for name, column in self.columns.items():
            if name in features:
                column[rows] = features[name]
        self.has_answers[rows] = "label" in features
        if embeddings is not None:
            if self.embeddings is None or self.embeddings.shape[1] != embeddings.shape[1]:
                self.embeddings = np.zeros((self.size, embeddings.shape[1]), dtype=np.float16)
            self.embeddings[rows] = embeddings
        self.seen += n

    def snapshot(self, last: int | None = None) -> dict:
        """The newest `last` inputs (all held when None), oldest first."""
        held = min(self.seen, self.size)
        n = held if last is None else max(0, min(last, held))
        rows = (self.seen - n + np.arange(n)) % self.size
        out = {name: column[rows].copy() for name, column in self.columns.items()}
        answered = self.has_answers[rows]
        if not answered.all():  # inputs without an answer (e.g. /embed) carry no label or confidence
            out["label"], out["confidence"] = out["label"][answered], out["confidence"][answered]
        if self.embeddings is not None:
            out[EMBEDDING] = self.embeddings[rows][answered].copy()
        return out


class Windows:
    """One Window per model version, safe to record into from the batcher's lanes. An endpoint that
    follows the registry meets a new version at every promotion: the windows of at most
    `max_versions` are kept, the one recorded into least recently is dropped first."""

    def __init__(self, size: int, max_versions: int = 4) -> None:
        self.size, self.max_versions = size, max_versions
        self._windows: dict[str, Window] = {}  # in order of last recording
        self._lock = threading.Lock()

    def record(self, version: str, features: dict, embeddings: np.ndarray | None = None) -> None:
        with self._lock:
            window = self._windows.pop(version, None)
            if window is None:
                window = Window(self.size)
                while len(self._windows) >= self.max_versions:
                    self._windows.pop(next(iter(self._windows)))
            self._windows[version] = window  # now the most recent
            window.record(features, embeddings)

    def snapshot(self, version: str, last: int | None = None) -> dict | None:
        with self._lock:
            window = self._windows.get(version)
            return None if window is None else window.snapshot(last)

    def summary(self) -> dict:
        with self._lock:
            return {v: {"held": min(w.seen, w.size), "seen": w.seen} for v, w in self._windows.items()}


def encode_arrays(arrays: dict) -> dict:
    """Arrays -> JSON-safe {name: {dtype, shape, data (base64)}} (embeddings as float16)."""
    out = {}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array.astype(np.float16) if name == EMBEDDING else array)
        out[name] = {
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "data": base64.b64encode(array.tobytes()).decode(),
        }
    return out


def decode_arrays(doc: dict) -> dict:
    """The inverse of encode_arrays; a malformed entry raises ValueError naming it."""
    out = {}
    for name, entry in doc.items():
        try:
            raw = base64.b64decode(entry["data"], validate=True)
            out[name] = np.frombuffer(raw, dtype=np.dtype(entry["dtype"])).reshape(entry["shape"]).copy()
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"window column {name!r} is malformed ({exc})") from None
    return out


class Sampler:
    """Writes `rate` of the requests (evenly spread, not drawn) with their answers as JSON lines
    under `folder`/<model>/<version>/<UTC date>.jsonl, for later labelling: off unless asked for
    (serve.monitor.sample_rate), since it stores the request texts as they were sent.

    A background thread writes; a request only puts a reference on a bounded queue, and when the
    queue is full (the disk is slow) the sample is dropped and counted, never waited for."""

    def __init__(self, rate: float, folder, max_pending: int = 1024) -> None:
        import queue
        from pathlib import Path

        self.rate, self.folder = rate, Path(folder)
        self.dropped = self.written = 0
        self._credit = 0.0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        threading.Thread(target=self._write, name="bertops-sampler", daemon=True).start()

    def offer(self, version: str, inputs: list, answers: list) -> None:
        import queue

        for item, answer in zip(inputs, answers):
            with self._lock:
                self._credit += self.rate
                if self._credit < 1.0:
                    continue
                self._credit -= 1.0
            try:
                self._queue.put_nowait((version, item, answer))
            except queue.Full:
                self.dropped += 1

    def _write(self) -> None:
        import datetime as dt
        import json

        while True:
            version, item, answer = self._queue.get()
            now = dt.datetime.now(dt.UTC)
            model, _, tag = version.partition(":")
            path = self.folder / model / (tag or "unversioned") / f"{now:%Y-%m-%d}.jsonl"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as out:
                    record = {"when": now.isoformat(timespec="milliseconds"), "version": version,
                              "input": item, "answer": answer}  # fmt: skip
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.written += 1
            except OSError:
                self.dropped += 1
