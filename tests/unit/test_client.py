"""The Python client against a scripted endpoint (httpx.MockTransport): batching, retries, errors."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from bertops.client import Client, ClientError


def scripted(replies: list | None = None, limit: int = 4):
    """An endpoint that embeds each text as [len(text), 1] and answers `replies` first (status codes)."""
    seen: list[tuple[str, int]] = []
    pending = list(replies or [])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metadata":
            return httpx.Response(200, json={"max_texts_per_request": limit})
        texts = json.loads(request.content)["texts"]
        seen.append((request.headers.get("authorization", ""), len(texts)))
        if pending:
            status = pending.pop(0)
            return httpx.Response(status, json={"error": f"scripted {status}"})
        return httpx.Response(200, json=[{"embedding": [float(len(t)), 1.0], "model_version": "m:v1"} for t in texts])

    return httpx.MockTransport(handle), seen


def test_long_lists_are_cut_to_the_endpoints_limit_and_come_back_in_order():
    transport, seen = scripted(limit=4)
    texts = [f"{'x' * i}" for i in range(1, 11)]
    with Client("http://endpoint", token="t0k", transport=transport, backoff=0) as client:
        vectors = client.encode(texts)
    assert vectors.shape == (10, 2) and vectors.dtype == np.float32
    assert vectors[:, 0].tolist() == list(range(1, 11))
    assert [n for _, n in seen] == [4, 4, 2] and {auth for auth, _ in seen} == {"Bearer t0k"}


def test_an_overloaded_endpoint_is_retried_and_a_refusal_is_raised_with_its_message():
    transport, seen = scripted([503, 503])
    with Client("http://endpoint", transport=transport, backoff=0) as client:
        assert client.encode(["abc"]).tolist() == [[3.0, 1.0]]
    assert len(seen) == 3  # two 503s, then the answer
    transport, seen = scripted([400])
    with Client("http://endpoint", transport=transport, backoff=0) as client, pytest.raises(ClientError) as err:
        client.encode(["abc"])
    assert err.value.status == 400 and "scripted 400" in str(err.value) and len(seen) == 1  # never retried
    transport, _ = scripted([503] * 10)
    with Client("http://endpoint", transport=transport, retries=2, backoff=0) as client, pytest.raises(ClientError):
        client.encode(["abc"])
    with Client("http://endpoint", transport=transport) as client, pytest.raises(TypeError, match="list of texts"):
        client.encode("one string")
