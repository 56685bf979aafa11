"""An embedding-only deployment: an encoder packaged with no task head (exported, scored on SQuAD
retrieval, gated), promoted and served on 127.0.0.1; then named by another model as its
registered embedding version."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_an_encoder_is_packaged_gated_promoted_and_served_alone(tmp_path: Path):
    from bertops import server
    from bertops.evaluation.embedding import copy_registered
    from bertops.model_store import registry_for
    from bertops.packaging import GateRejected, package_embedding, promote
    from bertops.registry import RegistryError
    from tests.conftest import REPO, smoke_config

    root = tmp_path
    shutil.copytree(REPO / "serving", root / "serving")
    cfg = smoke_config(["package.model_name=bertops-embed", "serve.port=3931"])
    registry = registry_for(cfg, root)

    # A floor it cannot reach: rejected, nothing registered, the decision says why.
    with pytest.raises(GateRejected, match="embedding retrieval recall@1"):
        package_embedding(smoke_config(["package.model_name=bertops-embed", "gate.min_embedding_recall_at_1=0.99"]),
                          root)  # fmt: skip
    assert registry.versions("bertops-embed") == {}
    assert "FAIL" in (root / "reports/gate/embedding-decision.md").read_text()

    packaged = package_embedding(cfg, root)
    record = registry.versions("bertops-embed")[packaged.version]
    assert record["lineage"]["task"] == "embedding" and "all-MiniLM-L6-v2" in record["lineage"]["parent_model"]
    section = record["metrics"]["embedding"]
    # Its served runtime (ONNX int8 or fp32, whichever passed the cosine check on SQuAD texts
    # outside the retrieval set) against itself in PyTorch fp32: the export costs (next to) nothing.
    assert section["runtime"] in ("onnx-int8", "onnx") and section["paragraphs"] == 60
    assert abs(section["versus"]["parent"]["retrieval"]["recall@1_difference"]["difference"]) <= 0.05
    assert section["retrieval"]["recall@1"] > 0.5 and record["gate"]["approved"]
    assert promote(cfg, root)["version"] == packaged.version

    cwd = os.getcwd()
    os.chdir(root)
    try:
        url = server.start_detached(cfg, timeout=240)
        texts = ["a cat sat on the mat", "a kitten rested on the rug", "stock prices fell sharply"]
        reply = httpx.post(f"{url}/embed", json={"texts": texts}, timeout=60)
        assert reply.status_code == 200, reply.text
        rows = reply.json()
        assert {r["model_version"] for r in rows} == {packaged.model_tag}
        assert "all-MiniLM-L6-v2" in rows[0]["embedding_model"] and len(rows[0]["embedding"]) == 384
        import numpy as np

        vectors = np.array([r["embedding"] for r in rows])
        assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3  # the general-purpose space
        metadata = httpx.get(f"{url}/metadata", timeout=10).json()
        assert metadata["task"] == "embedding" and metadata["labels"] == []
        refused = httpx.post(f"{url}/classify", json={"texts": ["x"]}, timeout=10)
        assert refused.status_code == 400 and "POST /embed" in refused.text
        openai = httpx.post(f"{url}/v1/embeddings", json={"input": "a cat", "model": "bertops-embed"}, timeout=30)
        assert openai.status_code == 200 and len(openai.json()["data"][0]["embedding"]) == 384
    finally:
        print(server.stop(cfg))
        os.chdir(cwd)

    # Another model names it as its /embed model (serve.embedding_model=bertops-embed): the very
    # files of its production version are copied out of the model store for evaluate and package.
    target = root / "models/sst2-serving/embedding"
    report = copy_registered(cfg, root, "bertops-embed", target)
    assert report["name"] == f"bertops-embed:{packaged.version}" and report["runtime"] == section["runtime"]
    from bertops.lineage import file_sha256

    assert file_sha256(target / report["runtimes"][report["runtime"]]["file"]) == section["runtime_sha256"]
    with pytest.raises(RegistryError, match="has no production version"):
        copy_registered(cfg, root, "bertops-nothing", target)
