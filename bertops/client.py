"""A thin Python client for a bertops endpoint, as bert-as-service offered one:

    from bertops.client import Client

    client = Client("http://127.0.0.1:3000", token=None)  # token: the endpoint's API token, if set
    vectors = client.encode(["a sentence", "another one"])  # numpy array, one row per text
    answers = client.classify(["a gripping film"])          # [{"label", "probabilities", ...}]

Long lists are cut into requests of at most the endpoint's `max_texts_per_request` (read from
GET /metadata once); an overloaded endpoint (503) or a dropped connection is retried with
exponential backoff; a request the endpoint refuses (4xx) raises `ClientError` with its message.
Needs httpx and numpy only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

RETRIED_STATUS = (502, 503, 504)


class ClientError(RuntimeError):
    """The endpoint refused a request (its message says why) or stayed unavailable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(
        self,
        url: str = "http://127.0.0.1:3000",
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.25,
        batch_size: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.retries, self.backoff, self._batch_size = retries, backoff, batch_size

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    @property
    def batch_size(self) -> int:
        if self._batch_size is None:
            self._batch_size = int(self.metadata()["max_texts_per_request"])
        return self._batch_size

    def metadata(self) -> dict:
        return self._call("GET", "/metadata")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One sentence embedding per text (as the endpoint serves them: L2-normalised by default)."""
        rows = self._batched("/embed", texts)
        return np.asarray([row["embedding"] for row in rows], dtype=np.float32).reshape(len(rows), -1)

    def classify(self, texts: Sequence[str | Sequence[str]]) -> list[dict]:
        """Label and probabilities per text (or per [first, second] pair for a sentence-pair model)."""
        return self._batched("/classify", texts)

    def _batched(self, route: str, items: Sequence) -> list[dict]:
        if isinstance(items, str):
            raise TypeError("pass a list of texts, not one string")
        out: list[dict] = []
        for start in range(0, len(items), self.batch_size):
            out += self._call("POST", route, json={"texts": list(items[start : start + self.batch_size])})
        return out

    def _call(self, method: str, path: str, **kwargs) -> Any:
        for attempt in range(self.retries + 1):
            try:
                reply = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.TimeoutException) as exc:
                if attempt == self.retries:
                    raise ClientError(f"{self.http.base_url}{path} is unreachable: {exc}") from None
            else:
                if reply.status_code < 400:
                    return reply.json()
                if reply.status_code not in RETRIED_STATUS or attempt == self.retries:
                    raise ClientError(f"{method} {path}: {reply.status_code} {_message(reply)}", reply.status_code)
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")


def _message(reply: httpx.Response) -> str:
    try:
        error = reply.json().get("error")
    except ValueError:
        return reply.text[:300]
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)
