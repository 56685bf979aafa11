"""An embedding-only deployment: an encoder packaged with no task head (exported, scored on SQuAD
retrieval, gated), promoted and served on 127.0.0.1; then named by another model as its
registered embedding version."""

from __future__ import annotations

import os
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
    _similarity_file(root / "pairs.tsv")
    cfg = smoke_config(["package.model_name=bertops-embed", "serve.port=3931", "evaluate.embedding.sts=pairs.tsv"])
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
    # the sentence-pair file: a question is closer to its own paragraph than to another article's
    assert section["sts_pairs"] == 80 and section["sts"]["spearman"] > 0.5
    assert "embedding spearman vs the parent encoder's (CI low of difference)" in {
        c["name"] for c in record["gate"]["checks"]
    }
    assert promote(cfg, root)["version"] == packaged.version

    cwd = os.getcwd()
    os.chdir(root)
    try:
        from typer.testing import CliRunner

        from bertops.cli import app

        listed = CliRunner().invoke(
            app, ["models", "list", "--params", str(REPO / "params.yaml"), "-s", "package.model_name=bertops-embed"]
        )
        assert f"{packaged.version}  production" in listed.output
        assert f"embedding recall@1={section['retrieval']['recall@1']:.4f}" in listed.output
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


def _similarity_file(path: Path) -> None:
    """A sentence-pair similarity file built from SQuAD: a question with its own paragraph (score
    1) or with a paragraph of another article (score 0)."""
    import json

    from tests.conftest import datasets_root

    articles = json.loads((datasets_root() / "squad-v1.1" / "dev-v1.1.json").read_text())["data"][-40:]
    rows = ["sentence1\tsentence2\tscore"]
    for i, article in enumerate(articles):
        paragraph = article["paragraphs"][0]
        other = articles[(i + 7) % len(articles)]["paragraphs"][0]["context"]
        question, own = (" ".join(t.split()) for t in (paragraph["qas"][0]["question"], paragraph["context"]))
        rows += [f"{question}\t{own}\t1", f"{question}\t{' '.join(other.split())}\t0"]
    path.write_text("\n".join(rows) + "\n")  # whitespace collapsed: no tab or newline inside a text
