"""What the endpoint keeps of what it is asked and what it answers, per model version, over the
last `size` inputs: the live side of drift monitoring.

Per input: its length in word pieces (with [CLS]/[SEP]), the share of its word pieces that are the
unknown token, whether it was truncated, and for a classifier the predicted label, the confidence
(the top probability) and the sentence embedding (the mean-pooled encoder state the head reads,
from the same forward pass). The same functions turn the evaluation split into a version's
reference profile at `package`, so both sides are measured alike.

Numpy (and fsspec for the shards every worker shares), no bertops imports: `bertops package`
copies this file into the Bento as `bertops_window.py`. Recording a batch is a few array copies
under a lock (no per-request allocation beyond the batch's own columns); nothing here can fail a
request.
"""

from __future__ import annotations

import base64
import os
import threading
import time

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
ANSWERED = "answered"  # which rows carry an answer (a shard's rows; never sent by GET /monitor/window)
WHEN = "when"  # when each row was recorded, unix seconds (a shard's rows: merging keeps the newest)


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
        self.when = np.zeros(size, dtype=np.float64)
        self.embeddings: np.ndarray | None = None
        self.seen = 0  # inputs recorded since the window started (the buffer holds min(seen, size))

    def record(self, features: dict, embeddings: np.ndarray | None = None, now: float | None = None) -> None:
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
        self.when[rows] = time.time() if now is None else now
        if embeddings is not None:
            if self.embeddings is None or self.embeddings.shape[1] != embeddings.shape[1]:
                self.embeddings = np.zeros((self.size, embeddings.shape[1]), dtype=np.float16)
            self.embeddings[rows] = embeddings
        self.seen += n

    def rows(self, last: int | None = None) -> dict:
        """The newest `last` inputs (all held when None), oldest first, every column whole: the
        ANSWERED mask says which carry a label, a confidence and an embedding."""
        held = min(self.seen, self.size)
        n = held if last is None else max(0, min(last, held))
        rows = (self.seen - n + np.arange(n)) % self.size
        out = {name: column[rows].copy() for name, column in self.columns.items()}
        out[ANSWERED] = self.has_answers[rows].copy()
        out[WHEN] = self.when[rows].copy()
        if self.embeddings is not None:
            out[EMBEDDING] = self.embeddings[rows].copy()
        return out

    def snapshot(self, last: int | None = None) -> dict:
        """The newest `last` inputs (all held when None), oldest first, as drift monitoring reads them."""
        return answered_only(self.rows(last))


def answered_only(rows: dict) -> dict:
    """Window rows -> the columns drift monitoring reads: inputs without an answer (e.g. /embed's)
    carry no label, confidence or embedding."""
    out = {name: column for name, column in rows.items() if name not in (ANSWERED, WHEN)}
    answered = rows[ANSWERED]
    if not answered.all():
        for name in ("label", "confidence", EMBEDDING):
            if name in out:
                out[name] = out[name][answered]
    return out


class Windows:
    """One Window per model version, safe to record into from the batcher's lanes. An endpoint that
    follows the registry meets a new version at every promotion: the windows of at most
    `max_versions` are kept, the one recorded into least recently is dropped first."""

    def __init__(self, size: int, max_versions: int = 4) -> None:
        self.size, self.max_versions = size, max_versions
        self._windows: dict[str, Window] = {}  # in order of last recording
        self._lock = threading.Lock()

    def record(self, version: str, features: dict, embeddings: np.ndarray | None = None,
               now: float | None = None) -> None:  # fmt: skip
        now = time.time() if now is None else now
        with self._lock:
            window = self._windows.pop(version, None)
            if window is None:
                window = Window(self.size)
                while len(self._windows) >= self.max_versions:
                    self._windows.pop(next(iter(self._windows)))
            self._windows[version] = window  # now the most recent
            window.record(features, embeddings, now)

    def snapshot(self, version: str, last: int | None = None) -> dict | None:
        with self._lock:
            window = self._windows.get(version)
            return None if window is None else window.snapshot(last)

    def rows(self, version: str) -> dict | None:
        """Every row held of `version` (Window.rows), for this worker's shard."""
        with self._lock:
            window = self._windows.get(version)
            return None if window is None else window.rows()

    def summary(self) -> dict:
        with self._lock:
            return {v: {"held": min(w.seen, w.size), "seen": w.seen} for v, w in self._windows.items()}


class Shards:
    """The windows of every worker and replica of an endpoint, kept where they all reach (the model
    store: a folder or any fsspec URL). Each worker writes its own window of a version it serves as
    `<url>/<model>/windows/<version>/<worker>.npz` (`publish`, from a background thread every
    `every_s` seconds when it changed, and at least every 3 x `every_s` so a live worker's shard
    stays fresh); GET /monitor/window on any worker reads them all (`fresh`) and answers with the
    newest rows of their union (`merge`), so drift is judged on the endpoint's whole traffic, not
    one worker's share. A shard not rewritten for `max_age_s` (its worker stopped) is left out
    without being read, and one older than `REMOVE_AFTER` x `max_age_s` is removed."""

    REMOVE_AFTER = 30  # x max_age_s (an hour at the defaults): what stopped workers leave behind

    def __init__(self, url: str, worker: str, every_s: float = 10.0, max_age_s: float = 120.0) -> None:
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.root, self.worker = root.rstrip("/"), worker
        self.every_s, self.heartbeat_s, self.max_age_s = every_s, 3 * every_s, max_age_s
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols or "local" in protocols
        self._written: dict[str, tuple[int, float]] = {}  # version -> (inputs seen, when) at the last write
        self._lock = threading.Lock()

    def folder(self, version: str) -> str:
        model, _, tag = version.partition(":")
        return f"{self.root}/{model}/windows/{tag or 'unversioned'}"

    def due(self, version: str, seen: int, now: float) -> bool:
        last = self._written.get(version)
        if last is None:
            return True
        return (seen != last[0] and now - last[1] >= self.every_s) or now - last[1] >= self.heartbeat_s

    def write(self, version: str, rows: dict, seen: int, now: float) -> None:
        """This worker's shard of `version`: its rows (Window.rows) and who wrote it, when. A shard
        never goes back: rows taken before the last write's (another thread's) are not written."""
        import io
        import json

        meta = {"worker": self.worker, "version": version, "seen": seen, "written_at": now}
        buffer = io.BytesIO()
        np.savez(buffer, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **rows)
        folder, data = self.folder(version), buffer.getvalue()
        target = f"{folder}/{self.worker}.npz"
        with self._lock:
            if self._written.get(version, (-1, 0.0))[0] > seen:
                return
            self.fs.makedirs(folder, exist_ok=True)
            if self.local:  # whole or not at all: a reader never sees half a shard
                partial = f"{target}.partial"
                with open(partial, "wb") as out:
                    out.write(data)
                os.replace(partial, target)
            else:  # an object store's put is whole; other filesystems are checked when read
                self.fs.pipe_file(target, data)
            self._written[version] = (seen, now)

    def publish(self, windows: Windows, now: float, versions: set[str], force: str | None = None) -> None:
        """Write the shard of each of `versions` (the ones this worker serves now) whose window
        changed or is due a heartbeat; `force`: that version alone, now, whatever its timing (before
        this worker answers a window request)."""
        for version, held in windows.summary().items():
            if version == force or (force is None and version in versions and self.due(version, held["seen"], now)):
                rows = windows.rows(version)
                if rows is not None:
                    self.write(version, rows, held["seen"], now)

    def fresh(self, version: str, now: float) -> list[tuple[dict, dict]]:
        """(meta, rows) of every shard of `version` written within `max_age_s`. A shard the store
        dates older than that is not read (one far older is removed); one that cannot be read or
        does not hold a window (half-written, damaged, from another bertops) is left out."""
        import io
        import json

        try:
            entries = self.fs.ls(self.folder(version), detail=True)
        except (FileNotFoundError, OSError):
            return []
        out = []
        for entry in sorted(entries, key=lambda e: e["name"]):
            path = entry["name"]
            if not path.endswith(".npz"):
                continue
            age = now - _modified(entry, now)
            if age > self.REMOVE_AFTER * self.max_age_s:
                try:
                    self.fs.rm(path)
                except OSError:
                    pass
            if age > 2 * self.max_age_s:  # the store's clock may differ a little; written_at decides
                continue
            try:
                with np.load(io.BytesIO(self.fs.cat_file(path)), allow_pickle=False) as data:
                    meta = json.loads(bytes(data["__meta__"]).decode())
                    rows = {name: data[name] for name in data.files if name != "__meta__"}
                if now - float(meta["written_at"]) <= self.max_age_s and _is_window(rows):
                    out.append((meta, rows))
            except Exception:  # noqa: BLE001 - a bad shard is one worker's loss, never the window's
                continue
        return out


def _modified(entry: dict, default: float) -> float:
    """When the store last wrote an `fs.ls(detail=True)` entry, unix seconds (local: mtime; S3:
    LastModified; GCS: updated); `default` when it does not say."""
    import datetime as dt

    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = entry.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return default


def _is_window(rows: dict) -> bool:
    """Whether a shard's arrays are rows of a window: every column, one length, 2-D embeddings."""
    names = (*COLUMNS, ANSWERED, WHEN)
    if any(name not in rows or rows[name].ndim != 1 for name in names):
        return False
    n = len(rows["tokens"])
    if any(len(rows[name]) != n for name in names):
        return False
    embedding = rows.get(EMBEDDING)
    return embedding is None or (embedding.ndim == 2 and len(embedding) == n)


def compatible(shards: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """The shards that can be merged: a shard whose embeddings have another width than the first
    shard's (a worker on another encoder) is left out, and so not counted either."""
    dim = next((rows[EMBEDDING].shape[1] for _, rows in shards if EMBEDDING in rows), None)
    return [(meta, rows) for meta, rows in shards if EMBEDDING not in rows or rows[EMBEDDING].shape[1] == dim]


def merge(shards: list[tuple[dict, dict]], last: int | None = None) -> dict:
    """One window from the shards of several workers: the newest `last` rows of their union by the
    time each was recorded (all of them when None), oldest first, over the `compatible` shards.
    Returns the rows of Window.rows."""
    parts = [rows for _, rows in compatible(shards)]
    dim = next((rows[EMBEDDING].shape[1] for rows in parts if EMBEDDING in rows), None)
    out = {name: np.concatenate([rows[name] for rows in parts]) for name in (*COLUMNS, ANSWERED, WHEN)}
    if dim is not None:  # a worker that only embedded (no answers) kept no embeddings: zeros, unanswered
        out[EMBEDDING] = np.concatenate(
            [rows.get(EMBEDDING, np.zeros((len(rows["tokens"]), dim), dtype=np.float16)) for rows in parts]
        )
    order = np.argsort(out[WHEN], kind="stable")
    if last is not None:
        order = order[len(order) - min(last, len(order)) :]
    return {name: column[order] for name, column in out.items()}


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
