"""A short real fine-tune on a few hundred SST-2 rows, then evaluate, gate, package (BentoML),
promote, and a real request to the served endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_finetune_saves_a_rebuildable_model_with_lineage(trained_workspace):
    root, cfg, result = trained_workspace
    model_dir = root / "models/sst2"
    assert {"model.safetensors", "config.json", "tokenizer.json", "lineage.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    lineage = json.loads((model_dir / "lineage.json").read_text())
    manifest = json.loads((root / "data/raw/sst2/manifest.json").read_text())
    assert lineage["data_hash"] == manifest["data_hash"] and lineage["dataset"] == "sst2"
    assert lineage["params"]["finetune"]["lr"] == cfg.finetune.lr and lineage["git_commit"]
    # A few hundred rows and 2 epochs already beat chance clearly on held-out validation rows.
    assert result.best_validation_accuracy > 0.6
    assert result.padding_share < 0.15  # length bucketing keeps padding low
    assert (root / "reports/finetune/metrics.json").is_file() and (root / "reports/finetune/validation.csv").is_file()


def test_evaluate_and_gate_write_reports(trained_workspace):
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate

    root, cfg, _ = trained_workspace
    metrics = evaluate(cfg, root)
    assert metrics["examples"] == 200 and 0.5 < metrics["accuracy"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) == 200
    assert set(metrics["slices"]) == set(cfg.evaluate.slices)
    lengths = metrics["slices"]
    assert lengths["short"]["examples"] + lengths["medium"]["examples"] + lengths["long"]["examples"] == 200
    assert 0 < metrics["slices"]["negation"]["examples"] < 200
    from bertops.evaluation.behaviour import load_cases

    cases = load_cases(cfg.evaluate.behaviour)
    assert {k: v["cases"] for k, v in metrics["behaviour"].items()} == {
        "mft": len(cases.mft),
        "inv": len(cases.inv),
        "dir": len(cases.dir),
    }
    serving = metrics["serving"]
    _figures_come_from_the_served_runtime(root, cfg, metrics)
    assert 0 < serving["latency"]["p50_ms"] <= serving["latency"]["p95_ms"]
    assert len(serving["latency"]["p95_ms_rounds"]) == cfg.evaluate.latency_rounds
    summary = (root / "reports/evaluate/summary.md").read_text()
    assert (
        summary.startswith("## Evaluation on 200") and "### Slices" in summary and "### Behavioural checks" in summary
    )
    assert f"runtime that will be served: **{serving['runtime']}**" in summary
    decision = gate(cfg, root)
    by_name = {c.name: c for c in decision.checks}
    assert by_name["p95 latency ms"].value == serving["latency"]["p95_ms"]
    assert by_name["behaviour mft pass rate"].value == metrics["behaviour"]["mft"]["pass_rate"]
    # A few hundred rows and 2 epochs clear the smoke floors (accuracy 0.5, mft 0.3): a model whose
    # labels were shuffled or whose encoder did not learn stays near 0.5 and fails them.
    assert decision.approved, decision.reasons
    assert (decision.runtime, decision.runtime_sha256) == (serving["runtime"], serving["runtime_sha256"])
    assert json.loads((root / "reports/gate/decision.json").read_text())["runtime"] == serving["runtime"]
    _embedding_model_is_scored_and_gated(metrics, decision, summary)


def _embedding_model_is_scored_and_gated(metrics: dict, decision, summary: str) -> None:
    """/embed's model (the smoke profile: the candidate's own encoder, on the served ONNX graph's
    embedding output) is scored on SQuAD retrieval beside the parent encoder, and the gate judges it."""
    embedding = metrics["embedding"]
    assert embedding["model"] == "the candidate's own encoder" and embedding["scored"]
    assert embedding["runtime"] == metrics["serving"]["runtime"]
    assert embedding["runtime_sha256"] == metrics["serving"]["runtime_sha256"]  # the very graph served
    assert embedding["paragraphs"] == 60 and embedding["retrieval_source"].endswith("dev-v1.1.json")
    # all-MiniLM-L6-v2 finds most questions' paragraphs among 60 (chance: 1/60), and a short
    # fine-tune keeps most of that
    parent = embedding["versus"]["parent"]["retrieval"]
    assert parent["recall@1"] > 0.5 and embedding["retrieval"]["recall@1"] > 0.4
    difference = parent["recall@1_difference"]
    assert difference["difference"] == pytest.approx(embedding["retrieval"]["recall@1"] - parent["recall@1"])
    assert difference["ci_low"] <= difference["difference"] <= difference["ci_high"] and difference["examples"] == 60
    check = {c.name: c for c in decision.checks}["embedding recall@1 vs the parent encoder's (CI low of difference)"]
    assert check.value == difference["ci_low"] and check.threshold == -0.15
    assert decision.embedding["runtime_sha256"] == embedding["runtime_sha256"]
    assert "### /embed's model: the candidate's own encoder" in summary


def _figures_come_from_the_served_runtime(root: Path, cfg, metrics: dict) -> None:
    """evaluate exported the runtimes, checked them on the validation slice (never the eval split),
    chose the one serve.runtime picks, and every figure is that runtime's: its accuracy recomputed
    here from the exported file matches, and its size is the file's."""
    import numpy as np
    import pandas as pd

    from bertops.lineage import file_sha256
    from bertops.models.classifier import load_classifier
    from bertops.models.export import onnx_session, session_logits

    serving = metrics["serving"]
    export = serving["export"]
    assert export["checked_on"].startswith("validation slice carved from train")
    carved = sum(len(pd.read_parquet(root / f"data/prepared/sst2/{part}.parquet")) for part in ("train", "validation"))
    assert export["examples"] == min(500, carved)  # the slice topped up from train (as many rows as there are)
    assert serving["runtime"] == export["runtime"] != "torch"  # auto picks an ONNX runtime on CPU
    served = export["runtimes"][serving["runtime"]]
    assert served["passed"]
    if serving["runtime"] == "onnx":  # int8 may only lose to fp32 by failing its check
        assert not export["runtimes"]["onnx-int8"]["passed"]
    path = root / "models/sst2-serving" / served["file"]
    assert serving["runtime_sha256"] == file_sha256(path) == served["sha256"]
    assert serving["model_size_mb"] == round(path.stat().st_size / 1e6, 2)
    evals = pd.read_parquet(root / "data/prepared/sst2/eval.parquet")
    _, tokenizer = load_classifier(root / "models/sst2")
    # (batched as evaluate batches: dynamic int8 scales activations per batch, so a borderline
    # example can flip with the company it is computed in)
    logits = session_logits(
        onnx_session(path), tokenizer, evals["text"].tolist(), cfg.prepare.max_length, cfg.evaluate.batch_size
    )
    assert metrics["accuracy"] == float(np.mean(logits.argmax(-1) == evals["label"].to_numpy()))


def test_a_damaged_model_folder_is_refused_before_any_figure(trained_workspace, tmp_path: Path):
    import shutil

    from bertops.evaluation.evaluate import evaluate
    from bertops.lineage import ArtifactMismatch
    from bertops.models.classifier import load_classifier
    from bertops.packaging import GateRejected, package

    root, cfg, _ = trained_workspace
    copy = tmp_path / "ws"
    for rel in ("models/sst2", "data/prepared/sst2", "reports/gate"):
        shutil.copytree(root / rel, copy / rel)
    weights = copy / "models/sst2/model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated copy
    with pytest.raises(ArtifactMismatch, match="does not match the sha256"):
        evaluate(cfg, copy)
    with pytest.raises(ArtifactMismatch, match="is damaged and cannot be loaded"):
        load_classifier(copy / "models/sst2")
    with pytest.raises((ArtifactMismatch, GateRejected)):
        package(cfg, copy)
    assert not (copy / "reports/evaluate").exists() and not (copy / "registry").exists()


def test_rejected_model_is_not_packaged(trained_workspace):
    from bertops.evaluation.gate import gate
    from bertops.packaging import GateRejected, package
    from tests.conftest import smoke_config

    root, cfg, _ = trained_workspace
    strict = smoke_config(["gate.min_accuracy=0.999"])
    assert not gate(strict, root).approved
    with pytest.raises(GateRejected, match="accuracy"):
        package(strict, root)
    from bertops.model_store import registry_for

    assert registry_for(cfg, root).versions(cfg.package.model_name) == {}  # nothing registered
    gate(cfg, root)  # restore the approving decision for the next test


def test_package_promote_serve_and_classify(trained_workspace, tmp_path: Path):

    from bertops import server
    from bertops.model_store import registry_for
    from bertops.packaging import package, promote

    root, cfg, _ = trained_workspace
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate
    from bertops.packaging import GateRejected
    from tests.conftest import smoke_config

    parent = smoke_config(["serve.embedding_model=parent"])  # /embed: the parent encoder
    with pytest.raises(GateRejected, match="did not judge"):  # the gate judged the model's own encoder
        package(parent, root)
    report = evaluate(parent, root)  # exports the parent for /embed and scores that runtime
    embedding = report["embedding"]
    assert "all-MiniLM-L6-v2" in embedding["model"] and embedding["export"]["runtimes"]["onnx"]["passed"]
    assert embedding["runtime"] == embedding["export"]["runtime"] != "torch"
    # the served export of the parent against the parent in PyTorch: the quantisation's cost only
    assert abs(embedding["versus"]["parent"]["retrieval"]["recall@1_difference"]["difference"]) <= 0.05
    assert gate(parent, root).approved
    packaged = package(parent, root)
    import bentoml

    # this process packaged other models before (other modules' workspaces and serving folders): the
    # Bento holds this one's model and no other (BentoML re-imported the service, not its engine)
    assert [str(m.tag) for m in bentoml.get(packaged.bento_tag).info.all_models] == [packaged.model_tag]
    record = promote(cfg, root)
    assert record["version"] == packaged.version
    registry = registry_for(cfg, root)
    assert registry.production("bertops-sst2") == packaged.version
    assert registry.versions("bertops-sst2")[packaged.version]["lineage"]["dataset"] == "sst2"

    import os

    cwd = os.getcwd()
    os.chdir(root)  # the server helpers use the config's relative paths
    try:
        url = server.start_detached(cfg, timeout=240)
        assert url == "http://127.0.0.1:3917"
        reply = httpx.post(
            f"{url}/classify", json={"texts": ["a gripping, beautifully acted film", "dull"]}, timeout=60
        )
        assert reply.status_code == 200
        body = reply.json()
        assert [set(item) for item in body] == [{"label", "probabilities", "model_version", "truncated"}] * 2
        assert body[0]["model_version"] == packaged.model_tag and not body[0]["truncated"]
        assert all(abs(sum(item["probabilities"].values()) - 1) < 1e-4 for item in body)
        _same_token_ids_as_training(root, cfg, url)
        metadata = httpx.get(f"{url}/metadata", timeout=10).json()
        assert metadata["model_version"] == packaged.model_tag and metadata["labels"] == ["negative", "positive"]
        assert metadata["lineage"]["dataset"] == "sst2" and metadata["lineage"]["gate"]["approved"] is True
        export = metadata["lineage"]["serving_export"]
        assert metadata["runtime"] == export["runtime"] == metadata["lineage"]["gate"]["runtime"]
        assert metadata["runtime_judged_by_gate"] is True and export["runtimes"]["onnx"]["max_abs_logit_diff"] < 1e-3
        public = json.dumps(metadata)  # no server paths (workspace, environment) in the public metadata
        import sys

        assert str(root.resolve()) not in public and sys.prefix not in public and "per_class" not in public
        _embeddings_are_unit_sentence_vectors(url)
        _the_python_client_and_the_openai_embeddings_api(url, packaged)
        _bad_requests_get_4xx_and_the_server_keeps_answering(url, cfg)
        _oversized_bodies_get_413_while_others_are_served(root, cfg, url)
        _a_lone_request_after_a_burst_does_not_wait(url)
        _drift_is_watched(root, url, packaged)

        # A damaged challenger (2 optimizer steps) loses to the champion on the same examples: the gate
        # rejects it, nothing is packaged or promoted, and the endpoint keeps answering as before.
        from bertops.evaluation.evaluate import evaluate
        from bertops.evaluation.gate import gate
        from bertops.packaging import GateRejected
        from bertops.training.finetune import finetune

        damaged = smoke_config(
            ["finetune.max_steps=2", "gate.min_accuracy=0.0", "gate.min_macro_f1=0.0", "gate.max_ece=1.0"]
        )
        finetune(damaged, root)
        metrics = evaluate(damaged, root)
        assert metrics["champion"]["version"] == packaged.version
        assert metrics["champion"]["ci_low"] < -damaged.gate.non_inferiority_margin
        decision = gate(damaged, root)
        assert not decision.approved and decision.comparison["verdict"] == "inferior"
        with pytest.raises(GateRejected):
            package(damaged, root)
        assert registry.production("bertops-sst2") == packaged.version
        again = httpx.post(
            f"{url}/classify", json={"texts": ["a gripping, beautifully acted film", "dull"]}, timeout=60
        )
        assert again.json() == body

        # The endpoint follows the registry: a second (approved) version, promoted while clients keep
        # sending requests, is loaded beside the first and switched to with no restart and no failed
        # request; a rollback written to the registry alone reaches it by polling.
        lenient = smoke_config(
            [
                "finetune.max_steps=2",
                "gate.min_accuracy=0.0",
                "gate.min_macro_f1=0.0",
                "gate.max_ece=1.0",
                "gate.non_inferiority_margin=1.0",
                "gate.slice_non_inferiority_margin=1.0",
                "gate.min_behaviour_pass_rate=null",
            ]
        )
        assert gate(lenient, root).approved
        second = package(lenient, root)
        pid = server.pid_path(cfg).read_text()
        with _steady_traffic(url) as seen:
            assert promote(lenient, root)["previous"] == packaged.version
            assert second.version in server.follow_registry(cfg)
            _wait_for(lambda: seen["versions"][-1:] == [second.model_tag], 10)
            assert registry.rollback("bertops-sst2", reason="test") == packaged.version
            _wait_for(lambda: seen["versions"][-1:] == [packaged.model_tag], cfg.serve.poll_s + 20)  # no reload call
        assert seen["failed"] == [] and seen["answered"] > 20, seen["failed"][:3]
        assert {packaged.model_tag, second.model_tag} <= set(seen["versions"])
        assert server.pid_path(cfg).read_text() == pid  # the same server process throughout
        _canary_and_shadow(root, cfg, url, registry, packaged, second, lenient)
        _an_altered_or_missing_artifact_is_refused_and_the_endpoint_keeps_serving(root, cfg, url, registry, packaged)
    finally:
        print(server.stop(cfg))
        os.chdir(cwd)


def _an_unhealthy_canary_is_withdrawn_by_the_endpoint(root, cfg, url, headers) -> None:
    from bertops.model_store import registry_for

    registry, name = registry_for(cfg, root), cfg.package.model_name
    other = next(v for v, r in registry.versions(name).items() if r["stage"] == "archived" and r["gate"]["approved"])
    registry.start_trial(name, other, 50, reason="too slow on purpose")
    _wait_for(lambda: httpx.get(f"{url}/metadata", headers=headers, timeout=10).json()["follow"]["canary"] == other, 30)
    for i in range(40):
        httpx.post(f"{url}/classify", json={"texts": [f"text {i}"]}, headers=headers, timeout=60)
    _wait_for(lambda: registry.routing(name).canary is None, 30)
    last = registry.history(name)[-1]
    assert (last["action"], last["who"], last["version"]) == ("withdraw", "auto", other)
    assert "max_p95_ratio" in last["reason"]
    follow = httpx.get(f"{url}/metadata", headers=headers, timeout=10).json()["follow"]
    assert follow["canary"] is None and other in follow["withdrawn"]


def _canary_and_shadow(root, cfg, url, registry, packaged, second, lenient) -> None:
    """A canary takes exactly its share and both versions show in /metrics; withdrawing it returns
    every request to production; a shadow answers in the background (only its agreement is kept);
    promoting the shadow's version completes the rollout."""
    from bertops import server
    from bertops.packaging import promote

    name = cfg.package.model_name

    def versions(n: int) -> list[str]:
        return [
            httpx.post(f"{url}/classify", json={"texts": [f"film number {i}"]}, timeout=60).json()[0]["model_version"]
            for i in range(n)
        ]

    promote(lenient, root, version=second.version, canary=25)
    server.follow_registry(cfg)
    seen = versions(40)
    assert seen.count(second.model_tag) == 10 and seen.count(packaged.model_tag) == 30
    exposition = httpx.get(f"{url}/metrics", timeout=10).text
    for tag in (packaged.model_tag, second.model_tag):
        assert f'bertops_answers_total{{endpoint="/classify",version="{tag}"}}' in exposition
        assert f'bertops_inference_seconds_count{{endpoint="/classify",version="{tag}"}}' in exposition
    assert registry.withdraw(name, reason="test") == [second.version]  # what `bertops rollback` does
    server.follow_registry(cfg)
    assert set(versions(10)) == {packaged.model_tag}

    promote(lenient, root, version=second.version, shadow=True)
    server.follow_registry(cfg)
    assert set(versions(12)) == {packaged.model_tag}  # the shadow's answers are never returned
    _wait_for(lambda: (httpx.get(f"{url}/metadata", timeout=10).json()["shadow"] or {}).get("compared", 0) >= 12, 30)
    shadow = httpx.get(f"{url}/metadata", timeout=10).json()["shadow"]
    assert shadow["version"] == second.model_tag and 0 <= shadow["agreement"] <= 1 and shadow["errors"] == 0
    series = f'bertops_shadow_answers_total{{endpoint="/classify",outcome="agree",version="{second.model_tag}"}}'
    assert series in httpx.get(f"{url}/metrics", timeout=10).text
    promote(lenient, root, version=second.version)  # completes the rollout
    assert registry.routing(name).shadow is None and registry.history(name)[-1]["reason"] == "completes the shadow"
    server.follow_registry(cfg)
    assert set(versions(5)) == {second.model_tag}
    registry.rollback(name, reason="back to the first")
    server.follow_registry(cfg)
    assert set(versions(5)) == {packaged.model_tag}


class _steady_traffic:
    """Two clients sending requests back to back; records the versions that answered and any failure."""

    def __init__(self, url: str) -> None:
        import threading

        self.url, self.stop = url, threading.Event()
        self.seen: dict = {"versions": [], "failed": [], "answered": 0}

    def _client(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                try:
                    reply = client.post(f"{self.url}/classify", json={"texts": ["a fine film"]})
                except httpx.HTTPError as exc:
                    self.seen["failed"].append(repr(exc))
                    continue
                if reply.status_code != 200:
                    self.seen["failed"].append(f"{reply.status_code} {reply.text[:200]}")
                    continue
                self.seen["answered"] += 1
                version = reply.json()[0]["model_version"]
                if self.seen["versions"][-1:] != [version]:
                    self.seen["versions"].append(version)

    def __enter__(self) -> dict:
        import threading

        self.threads = [threading.Thread(target=self._client) for _ in range(2)]
        for thread in self.threads:
            thread.start()
        return self.seen

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def _wait_for(condition, timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _an_altered_or_missing_artifact_is_refused_and_the_endpoint_keeps_serving(root, cfg, url, registry, packaged):
    from bertops import server
    from bertops.model_store import StoreError, store_for
    from bertops.packaging import promote

    name = cfg.package.model_name
    record = registry.versions(name)[packaged.version]
    body = {k: v for k, v in record.items() if k not in ("stage", "registered_at")}
    store = Path(store_for(cfg, root).url) / name
    (store / "altered.tar").write_bytes((store / f"{packaged.version}.tar").read_bytes() + b"tampered")
    for version in ("altered", "missing"):  # the registry says: the bytes of the good version
        registry.register(name, version, body)
    for version, why in (("altered", "does not match the registry"), ("missing", "missing from the model store")):
        promote(cfg, root, version=version)
        with pytest.raises(server.ServeError, match=why):
            server.follow_registry(cfg)
        reply = httpx.post(f"{url}/classify", json={"texts": ["fine"]}, timeout=60)
        assert reply.status_code == 200 and reply.json()[0]["model_version"] == packaged.model_tag
        follow = httpx.get(f"{url}/metadata", timeout=10).json()["follow"]
        assert version in follow["refused"] and follow["serving"] == packaged.version
    with pytest.raises(StoreError, match="missing from the model store"):
        server.start_detached(cfg, timeout=60)  # a fresh start refuses it too, and says why
    registry.promote(name, packaged.version, reason="back to the good one")


def _embeddings_are_unit_sentence_vectors(url: str) -> None:
    import numpy as np

    texts = ["a great film", "a wonderful movie", "the stock market fell sharply on tuesday"]
    reply = httpx.post(f"{url}/embed", json={"texts": texts}, timeout=60)
    assert reply.status_code == 200
    vectors = np.array([item["embedding"] for item in reply.json()])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]  # paraphrases sit closer than unrelated text
    # /embed is served by the general-purpose encoder the classifier was fine-tuned from (its parent),
    # whose space sentiment training has not bent: topic, not sentiment, decides closeness.
    assert {item["embedding_model"] for item in reply.json()} == {
        httpx.get(f"{url}/metadata").json()["embedding_model"]
    }
    assert "all-MiniLM-L6-v2" in reply.json()[0]["embedding_model"]
    pair = httpx.post(
        f"{url}/embed",
        json={"texts": ["a cat sat on the mat", "a kitten rested on the rug", "stock prices fell sharply"]},
        timeout=60,
    ).json()
    cat, kitten, stocks = (np.array(item["embedding"]) for item in pair)
    assert cat @ kitten > 0.5 and cat @ stocks < 0.2, (cat @ kitten, cat @ stocks)


def _the_python_client_and_the_openai_embeddings_api(url: str, packaged) -> None:
    import numpy as np
    import openai

    from bertops.client import Client, ClientError

    texts = [f"review number {i}: a fine film" for i in range(70)]  # more than one request's worth
    with Client(url) as client:
        vectors = client.encode(texts)
        assert vectors.shape == (70, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert [a["label"] for a in client.classify(["a gripping film"])][0] in ("negative", "positive")
        with pytest.raises(ClientError, match="400"):
            client.encode([""])
    # The official OpenAI client, pointed at the endpoint (by default it asks for base64 and decodes).
    api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    reply = api.embeddings.create(model=packaged.model_tag.split(":")[0], input=texts[:3])
    assert [d.index for d in reply.data] == [0, 1, 2] and reply.model == packaged.model_tag
    # The same vectors (int8 dynamic quantisation scales activations per batch, so a text's vector
    # moves slightly with its batch-mates: compared by cosine, not bit for bit).
    assert (np.sum(np.array([d.embedding for d in reply.data]) * vectors[:3], axis=1) > 0.99).all()
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 3 * 5
    packed = api.embeddings.create(model=packaged.model_tag, input="one text", encoding_format="float")
    floats = packed.data[0].embedding
    assert len(floats) == 384 and abs(float(np.linalg.norm(floats)) - 1) < 1e-4
    with pytest.raises(openai.NotFoundError):
        api.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError) as err:
        api.embeddings.create(model=packaged.model_tag, input=[])
    assert "non-empty" in err.value.body["message"]
    raw = httpx.post(f"{url}/v1/embeddings", content=b"hello", headers={"Content-Type": "text/plain"}, timeout=30)
    assert raw.status_code == 415 and raw.json()["error"]["type"] == "invalid_request_error"


def _bad_requests_get_4xx_and_the_server_keeps_answering(url: str, cfg) -> None:
    limit = cfg.serve.max_texts_per_request
    bad_json = [
        {"texts": []},
        {"texts": [""]},
        {"texts": ["   "]},
        {"texts": [1]},
        {"texts": [None]},
        {"wrong": ["x"]},
        ["not", "an", "object"],
        {"texts": ["x"] * (limit + 1)},
        {"texts": ["x" * (cfg.serve.max_text_chars + 1)]},
    ]
    for endpoint in ("classify", "embed"):
        for bad in bad_json:
            reply = httpx.post(f"{url}/{endpoint}", json=bad, timeout=30)
            assert reply.status_code == 400 and reply.json()["error"], (endpoint, bad)
        for content, ctype, status in [
            (b"{not json", "application/json", 400),
            (bytes(range(256)) * 8, "application/json", 400),
            (b"hello", "text/plain", 415),
            (b'{"texts": ["x"]}', "application/x-www-form-urlencoded", 415),
        ]:
            reply = httpx.post(f"{url}/{endpoint}", content=content, headers={"Content-Type": ctype}, timeout=30)
            assert reply.status_code == status and reply.json()["error"], (endpoint, content[:20], ctype)
    # A text far beyond the model's max length is truncated, and the answer says so.
    long_text = " ".join(["remarkably"] * 400)  # 4,400 characters: within max_text_chars, far beyond max_length
    reply = httpx.post(f"{url}/classify", json={"texts": [long_text, "short"]}, timeout=60)
    assert reply.status_code == 200 and [item["truncated"] for item in reply.json()] == [True, False]
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.post(f"{url}/classify", json={"texts": ["still answering"]}, timeout=30).status_code == 200
    exposition = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'bertops_requests_total{endpoint="/classify",outcome="4xx"}' in exposition
    assert "bertops_truncated_texts_total 1.0" in exposition and "bertops_batch_size_bucket" in exposition


def test_bearer_token_is_required_when_configured(trained_workspace, monkeypatch):
    """Runs after the serve test: restarts the production endpoint with a token in its environment
    (and canary limits no canary can meet: the endpoint withdraws one by itself)."""

    from bertops import server
    from tests.conftest import smoke_config

    root, cfg, _ = trained_workspace
    cfg = smoke_config(["serve.canary.min_requests=5", "serve.canary.max_p95_ratio=0.001", "serve.poll_s=1"])
    monkeypatch.chdir(root)
    monkeypatch.setenv(cfg.serve.api_token_env, "s3cret-token")
    try:
        url = server.start_detached(cfg, timeout=240)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # probes stay open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            reply = httpx.post(f"{url}/classify", json={"texts": ["fine"]}, headers=headers, timeout=30)
            assert reply.status_code == 401 and "bearer token" in reply.json()["error"]
        assert httpx.get(f"{url}/metadata", timeout=10).status_code == 401
        # The admin call has its own token (start_detached made one; promote reads it): the API's is refused.
        admin = httpx.post(f"{url}/admin/reload", headers={"Authorization": "Bearer s3cret-token"}, timeout=30)
        assert admin.status_code == 401 and "admin token" in admin.json()["error"]
        assert "now serves" in server.follow_registry(cfg)
        _an_unhealthy_canary_is_withdrawn_by_the_endpoint(root, cfg, url, {"Authorization": "Bearer s3cret-token"})
        ok = httpx.post(
            f"{url}/classify", json={"texts": ["fine"]}, headers={"Authorization": "Bearer s3cret-token"}, timeout=60
        )
        assert ok.status_code == 200 and ok.json()[0]["label"] in ("negative", "positive")
        _killed_mid_switch_it_restarts_on_production(root, cfg, {"Authorization": "Bearer s3cret-token"})
    finally:
        print(server.stop(cfg))
        assert os.environ[cfg.serve.api_token_env] == "s3cret-token"


def _killed_mid_switch_it_restarts_on_production(root, cfg, headers) -> None:
    """SIGKILL while it loads a newly promoted version: nothing is lost; restarted, it serves the
    registry's production version."""
    import threading
    import time

    from bertops import server
    from bertops.model_store import registry_for

    registry, name = registry_for(cfg, root), cfg.package.model_name
    current = registry.production(name)
    other = next(v for v, r in registry.versions(name).items() if r["stage"] == "archived" and r["gate"]["approved"])
    registry.promote(name, other, reason="promoted, then the endpoint dies mid-switch")
    threading.Thread(target=lambda: _swallow(lambda: server.follow_registry(cfg)), daemon=True).start()
    time.sleep(0.3)  # the reload is under way: fetching or loading the new version
    leader = int(server.pid_path(cfg).read_text())
    server.kill_tree([leader, *server.descendants(leader)])  # the whole endpoint dies at once, workers too
    url = server.start_detached(cfg, timeout=240)
    reply = httpx.post(f"{url}/classify", json={"texts": ["fine"]}, headers=headers, timeout=60)
    assert reply.status_code == 200 and reply.json()[0]["model_version"] == f"{name}:{other}"
    assert registry.production(name) == other and current != other


def _swallow(call) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - the server it talks to is being killed
        pass


def test_a_runtime_that_fails_its_export_check_is_never_judged_or_packaged(trained_workspace):
    """serve.runtime=onnx with an impossible tolerance: evaluate refuses before writing a figure,
    the export and the reports the gate judged stay as they were, and package still ships only
    the runtime the gate judged."""
    from bertops.evaluation.evaluate import evaluate
    from bertops.models.export import ExportCheckFailed
    from tests.conftest import smoke_config

    root, _, _ = trained_workspace
    strict = smoke_config(["serve.runtime=onnx", "serve.onnx_max_abs_diff=1e-12"])
    kept = {
        rel: (root / rel).read_bytes()
        for rel in ("models/sst2-serving/export.json", "reports/evaluate/metrics.json", "reports/gate/decision.json")
    }
    with pytest.raises(ExportCheckFailed, match="serve.runtime=onnx failed its agreement check"):
        evaluate(strict, root)
    assert {rel: (root / rel).read_bytes() for rel in kept} == kept
    assert not list((root / "models").glob("*.partial"))  # no half-made export left behind


def _same_token_ids_as_training(root: Path, cfg, url: str) -> None:
    """The endpoint feeds the model exactly the token ids training saw: the raw dev rows (SST-2's
    end in a space) sent to POST /tokenize give the ids `prepare` stored for the same examples,
    and a text longer than max_length is cut the way training cuts it."""
    import pandas as pd

    from bertops.data.sources import load_raw

    frames, _ = load_raw(cfg, root)
    prepared = pd.read_parquet(root / cfg.paths.prepared / cfg.ingest.dataset / "eval.parquet")
    by_text = {row.text: list(row.input_ids) for row in prepared.itertuples()}
    raw = [t for t in frames["eval"][cfg.ingest.text_column] if " ".join(t.split()) in by_text][:40]
    assert len(raw) == 40 and any(t != t.strip() for t in raw)  # the raw text, not the normalised one
    reply = httpx.post(f"{url}/tokenize", json={"texts": raw}, timeout=60)
    assert reply.status_code == 200, reply.text
    served = reply.json()
    assert [item["input_ids"] for item in served] == [by_text[" ".join(t.split())] for t in raw]
    # A text longer than max_length: cut as training cuts it, the first max_length - 1 tokens and [SEP]
    from bertops.models.pretrained import load_tokenizer

    long_text = "  ".join(raw[:6])
    full = load_tokenizer(cfg.finetune.model)(" ".join(long_text.split()))["input_ids"]
    assert len(full) > cfg.prepare.max_length
    (item,) = httpx.post(f"{url}/tokenize", json={"texts": [long_text]}, timeout=60).json()
    assert item["truncated"] and item["input_ids"] == full[: cfg.prepare.max_length - 1] + full[-1:]


def _oversized_bodies_get_413_while_others_are_served(root: Path, cfg, url: str) -> None:
    """A 30 MB body is refused with 413 before it is read (declared, or chunked with no length) while
    other clients are answered, and the server's memory does not grow by the body's size."""
    import threading

    import psutil

    from bertops.server import pid_path

    leader = psutil.Process(int((root / pid_path(cfg)).read_text()))

    def rss_mb() -> float:
        return sum(p.memory_info().rss for p in [leader, *leader.children(recursive=True)]) / 2**20

    before = rss_mb()
    others: list[int] = []

    def normal_traffic() -> None:
        with httpx.Client(timeout=60) as client:
            for _ in range(20):
                others.append(client.post(f"{url}/classify", json={"texts": ["a fine film"]}).status_code)

    traffic = threading.Thread(target=normal_traffic)
    traffic.start()
    size = 30 * 10**6
    declared = httpx.post(
        f"{url}/classify", content=b"x" * size, headers={"Content-Type": "application/json"}, timeout=60
    )

    def chunks():
        for _ in range(size // 65536):
            yield b"x" * 65536

    try:
        chunked = httpx.post(
            f"{url}/classify", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60
        ).status_code
    except httpx.HTTPError:
        chunked = None  # the server answered 413 and closed while the client was still sending
    traffic.join()
    assert declared.status_code == 413 and "max_body_bytes" in declared.json()["error"]
    assert chunked in (413, None)
    assert others == [200] * 20
    assert rss_mb() - before < 25  # a 30 MB body read whole would show; the guard keeps 2 MB at most


def _a_lone_request_after_a_burst_does_not_wait(url: str) -> None:
    """After a burst of 32 clients, one client alone is served about as fast as before it: the
    batcher never holds a request back for company (BentoML's adaptive batcher made it 8-12x slower).
    The bound is loose on purpose (a shared CI machine); bench/endpoint.py measures the ratio."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    body = {"texts": ["a gripping, beautifully acted film"]}

    def lone_p50() -> float:
        timings = []
        with httpx.Client(timeout=60) as client:
            for _ in range(25):
                started = time.perf_counter()
                assert client.post(f"{url}/classify", json=body).status_code == 200
                timings.append(time.perf_counter() - started)
        return sorted(timings)[len(timings) // 2]

    fresh = lone_p50()
    with ThreadPoolExecutor(32) as pool, httpx.Client(timeout=60) as client:
        statuses = list(pool.map(lambda _: client.post(f"{url}/classify", json=body).status_code, range(400)))
    assert statuses == [200] * 400
    after = lone_p50()
    assert after < 3 * fresh + 0.015, (fresh, after)


def test_a_packaged_bento_still_serves_its_own_model_on_its_own(trained_workspace, tmp_path: Path):
    """The Bento `package` builds stays self-contained (for `bentoml containerize`): started from an
    empty folder with no registry or store in sight, it serves the model packaged into it."""
    import os
    import sys

    from bertops import server
    from bertops.model_store import registry_for

    root, cfg, _ = trained_workspace
    registry = registry_for(cfg, root)
    version = registry.production(cfg.package.model_name)
    record = registry.versions(cfg.package.model_name)[version]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTOPS_")}
    command = [str(Path(sys.executable).with_name("bentoml")), "serve", record["bento_tag"], "--port", "3919"]
    pid = tmp_path / "bento.pid"
    url = server._spawn_and_wait(
        command, "http://127.0.0.1:3919", "/readyz", 240, pid, tmp_path / "bento.log",
        lambda: server.stop_process(pid, "bentoml"), env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        reply = httpx.post(f"{url}/classify", json={"texts": ["a fine film"]}, timeout=60)
        assert reply.status_code == 200 and reply.json()[0]["model_version"] == record["model_tag"]
        assert httpx.get(f"{url}/metadata", timeout=10).json()["follow"] is None
    finally:
        server.stop_process(pid, "bentoml")


def test_two_workers_share_one_drift_window(trained_workspace, monkeypatch):
    """With serve.workers=2 each worker keeps its own window; both write it to the model store and
    GET /monitor/window, whichever worker answers, holds every input the endpoint classified."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from bertops import server
    from bertops.model_store import store_for
    from tests.conftest import smoke_config

    root, _, _ = trained_workspace
    cfg = smoke_config(["serve.workers=2", "serve.monitor.share_every_s=1", "serve.monitor.share_max_age_s=10"])
    monkeypatch.chdir(root)
    url = server.start_detached(cfg, timeout=240)
    try:
        workers = set(server.descendants(int(server.pid_path(cfg).read_text())))
        texts = [f"a film number {i} , fine and warm" for i in range(3)]

        def send(_: int) -> int:
            return httpx.post(f"{url}/classify", json={"texts": texts}, timeout=60).status_code  # a connection each

        def ours(doc: dict) -> list[dict]:  # this endpoint's workers (not shards an earlier server left)
            return [w for w in doc["workers"] if int(w["worker"].rsplit("-", 1)[1]) in workers]

        sent = 0
        for _ in range(5):  # until the kernel has handed connections to both workers
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(send, range(80))) == {200}
            sent += 240
            time.sleep(2.5)  # each worker writes its window within share_every_s of its last request
            doc = httpx.get(f"{url}/monitor/window", params={"last": 2000}, timeout=30).json()
            if len(ours(doc)) == 2:
                break
        for _ in range(3):  # whichever worker answers, it answers with both
            doc = httpx.get(f"{url}/monitor/window", params={"last": 2000}, timeout=30).json()
            mine = ours(doc)
            assert len(mine) == 2 and sum(w["held"] for w in mine) == sent, doc["workers"]
            assert doc["inputs"] == doc["held"] >= sent and all(w["held"] > 0 for w in mine)
        shared = Path(store_for(cfg, root).url) / cfg.package.model_name / "windows"
        assert len(list(shared.glob("*/*.npz"))) >= 2  # in the store every machine of the team reaches
    finally:
        print(server.stop(cfg))


def _drift_is_watched(root: Path, url: str, packaged) -> None:
    """The version carries its reference profile; the endpoint keeps the live window; `bertops
    monitor` (function, flow and CLI) judges it: eval-split text is no drift, long run-on text is,
    the scores reach /metrics, and the first drift starts a retrain (webhook) then cools down."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pandas as pd
    from typer.testing import CliRunner

    from bertops.cli import app
    from bertops.model_store import registry_for
    from bertops.monitoring.monitor import monitor
    from tests.conftest import REPO, smoke_config

    hooks: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            hooks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    overrides = [
        "monitor.window=150",
        "monitor.min_window=100",
        f"notify.webhook_url=http://127.0.0.1:{hook.server_port}/",
    ]
    cfg = smoke_config(overrides)
    record = registry_for(cfg, root).versions("bertops-sst2")[packaged.version]
    eval_texts = pd.read_parquet(root / cfg.paths.prepared / "sst2" / "eval.parquet")["text"].tolist()
    profile = record["reference_profile"]
    assert profile["rows"] == len(eval_texts) and set(profile["label_shares"]) == {"negative", "positive"}
    assert profile["embedding"]["dims"] == 384 and sum(profile["confidence_histogram"]["counts"]) == len(eval_texts)
    try:
        for i in range(0, 150, 30):
            assert httpx.post(f"{url}/classify", json={"texts": eval_texts[i : i + 30]}, timeout=60).status_code == 200
        calm = monitor(cfg, root)
        assert calm["report"]["verdict"] == "ok" and calm["report"]["window"] == 150, calm["report"]["message"]
        assert calm["retrain"]["trigger"] is False and calm["posted"] is True
        window = httpx.get(f"{url}/monitor/window", params={"last": 150}, timeout=30)
        (root / "window.json").write_text(window.text)
        run_on = [" and then ".join(eval_texts[i : i + 6]) for i in range(150)]  # long, truncated inputs
        for i in range(0, 150, 30):
            assert httpx.post(f"{url}/classify", json={"texts": run_on[i : i + 30]}, timeout=60).status_code == 200
        drifted = monitor(cfg, root)
        report = drifted["report"]
        assert report["verdict"] == "drift" and {"tokens", "truncated"} <= set(report["drifted"]), report["message"]
        assert drifted["retrain"]["trigger"] is True and drifted["retrain"]["notification"] is True
        from bertops.model_store import DRIFT_REPORT_KEY, store_for

        shared = store_for(cfg, root).read_state(cfg.package.model_name, DRIFT_REPORT_KEY)  # for every replica
        assert drifted["shared"] is True and shared["verdict"] == "drift" and shared["version"] == drifted["version"]
        assert hooks and hooks[0]["event"] == "drift" and "tokens" in hooks[0]["drifted"]
        again = monitor(cfg, root)  # the drift persists: no second retrain within the cool-down
        assert again["report"]["verdict"] == "drift" and again["retrain"]["trigger"] is False
        assert "cooling down" in again["retrain"]["reason"] and len(hooks) == 1
        out = root / cfg.paths.reports / "monitor"
        assert (out / "drift.png").stat().st_size > 10_000 and "| tokens |" in (out / "report.md").read_text()
        exposition = httpx.get(f"{url}/metrics", timeout=10).text
        assert f'bertops_drift_detected{{version="{packaged.model_tag}"}} 1.0' in exposition
        assert f'bertops_input_tokens_count{{version="{packaged.model_tag}"}}' in exposition
        assert httpx.get(f"{url}/metadata", timeout=10).json()["monitor"]["last_drift"]["verdict"] == "drift"
    finally:
        hook.shutdown()
    # The CLI: a saved window is judged (exit 0); a broken one or a dead endpoint is a clear error, exit != 0.
    args = ["--params", str(REPO / "params.yaml"), "--profile", str(REPO / "configs" / "smoke.yaml"),
            *[a for o in ["monitor.window=150", "monitor.cooldown_s=0"] for a in ("-s", o)]]  # fmt: skip
    runner = CliRunner()
    ok = runner.invoke(app, ["monitor", "--window-file", str(root / "window.json"), *args])
    assert ok.exit_code == 0 and "**OK**" in ok.output, ok.output
    (root / "broken.json").write_text('{"version": "x", "columns": {"tokens": {"data": "??"}}}')
    broken = runner.invoke(app, ["monitor", "--window-file", str(root / "broken.json"), *args])
    assert broken.exit_code == 1 and "malformed" in broken.output
    dead = runner.invoke(app, ["monitor", "--url", "http://127.0.0.1:9", *args])
    assert dead.exit_code == 75 and "no endpoint answered" in dead.output
    # The drift-watch flow: the same check as a Prefect flow run, published as artifacts.
    from bertops_flows.monitor import drift_watch

    state = drift_watch(
        params=str(REPO / "params.yaml"), profile=str(REPO / "configs" / "smoke.yaml"),
        overrides=["monitor.window=150"], url=url, root=str(root), return_state=True,
    )  # fmt: skip
    assert state.is_completed() and state.result()["verdict"] == "drift"
