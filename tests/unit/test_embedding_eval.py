"""/embed's model scored on retrieval and sentence-pair similarity, and judged by the gate; the
embedding-preservation term of fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertops.data.sources import DataSourceError
from bertops.evaluation import embedding as emb
from bertops.evaluation.gate import decide
from tests.conftest import datasets_root, smoke_config


def test_retrieval_pairs_take_whole_articles_in_a_seeded_order():
    articles = [
        {
            "title": t,
            "paragraphs": [
                {"context": f"{t} p{i}", "qas": [{"question": f"{t} q{i}"}, {"question": "x"}]} for i in range(3)
            ],
        }  # fmt: skip
        for t in "abcd"
    ]
    articles[0]["paragraphs"].append({"context": "no question", "qas": []})  # skipped: nothing to ask
    questions, paragraphs = emb.retrieval_pairs(articles, 7, seed=0)
    assert len(questions) == len(paragraphs) == 7
    assert all(q.split()[0] == p.split()[0] and q[-1] == p[-1] for q, p in zip(questions, paragraphs))
    titles = [p.split()[0] for p in paragraphs]
    assert titles[:3] == [titles[0]] * 3  # a whole article, then the next
    assert emb.retrieval_pairs(articles, 7, seed=0) == (questions, paragraphs)  # seeded
    assert emb.retrieval_pairs(articles, 12, seed=1) != emb.retrieval_pairs(articles, 12, seed=0)


def test_ranks_and_metrics_by_cosine():
    paragraphs = np.eye(4, dtype=np.float32)
    questions = np.array([[1, 0, 0, 0], [0.1, 0.9, 0, 0], [0, 0.9, 0.3, 0], [0.5, 0, 0, 0.4]], dtype=np.float32) * 3
    rank = emb.ranks(questions, paragraphs)
    assert rank.tolist() == [0, 0, 1, 1]  # question 2 prefers paragraph 1, question 3 paragraph 0
    metrics = emb.retrieval_metrics(rank)
    assert metrics == {"recall@1": 0.5, "recall@5": 1.0, "mrr": pytest.approx((1 + 1 + 0.5 + 0.5) / 4)}


def test_versus_is_a_paired_comparison_on_the_same_questions():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=200)
    good = emb.Scored(np.where(rng.random(200) < 0.8, 0, 3), gold + rng.normal(scale=0.3, size=200))
    bad = emb.Scored(np.where(rng.random(200) < 0.3, 0, 3), rng.normal(size=200))
    result = emb.versus(bad, good, gold, confidence=0.95, resamples=500)
    retrieval = result["retrieval"]["recall@1_difference"]
    assert retrieval["difference"] == pytest.approx((bad.rank < 1).mean() - (good.rank < 1).mean())
    assert retrieval["ci_high"] < 0 and retrieval["mcnemar_p"] < 1e-6  # clearly worse
    sts = result["sts"]["spearman_difference"]
    assert sts["ci_low"] <= sts["difference"] <= sts["ci_high"] < 0
    same = emb.versus(good, good, gold, confidence=0.95, resamples=500)
    assert (
        same["retrieval"]["recall@1_difference"]["difference"] == 0
        and same["sts"]["spearman_difference"]["ci_low"] == 0
    )


def _sts_file(tmp_path: Path, rows: list[str], header: str = "sentence1\tsentence2\tscore") -> Path:
    path = tmp_path / "sts.tsv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_an_sts_file_is_read_and_bad_ones_are_refused_naming_what_is_wrong(tmp_path: Path):
    rows = [f"a cat sat {i}\ta kitten rested {i}\t{i % 5}.5" for i in range(12)]
    first, second, scores = emb.load_sts(_sts_file(tmp_path, rows), tmp_path)
    assert len(first) == len(second) == 12 and scores[0] == 0.5
    with pytest.raises(DataSourceError, match=r"missing \['score'\]"):
        emb.load_sts(_sts_file(tmp_path, rows, "sentence1\tsentence2\tsimilarity"), tmp_path)
    with pytest.raises(DataSourceError, match=r"score is not a number on rows \[4\]"):
        emb.load_sts(_sts_file(tmp_path, [*rows[:2], "x\ty\thigh", *rows[3:]]), tmp_path)
    with pytest.raises(DataSourceError, match="needs >= 10 pairs"):
        emb.load_sts(_sts_file(tmp_path, rows[:5]), tmp_path)
    with pytest.raises(DataSourceError, match="no such file"):
        emb.load_sts(tmp_path / "absent.tsv", tmp_path)


def test_the_retrieval_set_resolves_locally_or_says_what_to_pass(tmp_path: Path):
    cfg = smoke_config([f"evaluate.embedding.retrieval.search_paths=['{datasets_root() / 'squad-v1.1'}']"])
    found = emb.load_retrieval_set(cfg.evaluate.embedding.retrieval, tmp_path)
    assert len(found.questions) == len(found.paragraphs) == 60 and found.source.endswith("dev-v1.1.json")
    nowhere = smoke_config(["evaluate.embedding.retrieval.search_paths=['/nonexistent']"])
    with pytest.raises(DataSourceError, match="evaluate.embedding.retrieval.path=") as error:
        emb.load_retrieval_set(nowhere.evaluate.embedding.retrieval, tmp_path)  # the hub is offline in tests
    assert "rajpurkar/squad" in str(error.value) and "retrieval=null" in str(error.value)
    (tmp_path / "bad.json").write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(DataSourceError, match="not a SQuAD JSON file"):
        emb.load_retrieval_set(smoke_config(["evaluate.embedding.retrieval.path=bad.json"]).evaluate.embedding.retrieval,
                               tmp_path)  # fmt: skip


def _report_with_embedding(ci_low_parent: float, ci_low_production: float | None = None, recall: float = 0.7) -> dict:
    def other(ci_low: float) -> dict:
        return {"retrieval": {"recall@1": recall, "recall@1_difference": {"difference": ci_low + 0.02, "ci_low": ci_low,
                                                                          "ci_high": ci_low + 0.04}}}  # fmt: skip

    versus = {"parent": other(ci_low_parent)}
    if ci_low_production is not None:
        versus["production"] = other(ci_low_production)
    return {
        "accuracy": 0.92,
        "macro_f1": 0.91,
        "ece": 0.05,
        "serving": {"model_size_mb": 90.9, "latency": {"p50_ms": 8.0, "p95_ms": 12.0}, "runtime": "onnx-int8"},
        "behaviour": {"mft": {"pass_rate": 0.95}, "inv": {"pass_rate": 0.9}, "dir": {"pass_rate": 0.9}},
        "model_sha256": "abc",
        "embedding": {
            "model": "m",
            "embedding_model": "parent",
            "runtime": "onnx",
            "runtime_sha256": "e1",
            "scored": True,
            "retrieval": {"recall@1": recall},
            "versus": versus,
        },  # fmt: skip
    }


def test_the_gate_refuses_an_embedding_model_worse_than_production_or_the_parent_beyond_the_margin():
    policy = smoke_config(["gate.embedding_margin=0.02"]).gate
    assert decide(_report_with_embedding(-0.015, -0.02), policy).approved
    worse = decide(_report_with_embedding(-0.015, -0.03), policy)
    assert not worse.approved and worse.reasons == [
        "embedding recall@1 vs production's (CI low of difference) = -0.0300, needs >= -0.02"
    ]
    assert not decide(_report_with_embedding(-0.25), policy).approved  # a bent space: below the parent
    assert decide(_report_with_embedding(-0.25), smoke_config(["gate.embedding_margin=null"]).gate).approved
    floor = decide(_report_with_embedding(0.0, recall=0.3), smoke_config(["gate.min_embedding_recall_at_1=0.5"]).gate)
    assert floor.reasons == ["embedding retrieval recall@1 = 0.3000, needs >= 0.5"]
    unscored = _report_with_embedding(-0.5)
    unscored["embedding"]["scored"] = False  # evaluate.embedding: null
    decision = decide(unscored, policy)
    assert decision.approved and decision.embedding == {"model": "m", "embedding_model": "parent", "runtime": "onnx",
                                                        "runtime_sha256": "e1"}  # fmt: skip
    assert "/embed: m on **onnx**" in decision.to_markdown()


def test_embedding_preservation_adds_the_distance_to_the_frozen_parent():
    import torch

    from bertops.data.batching import collate
    from bertops.models.classifier import build_classifier
    from bertops.models.pretrained import load_tokenizer, resolve_model_source
    from bertops.training.preserve import preserving_loss

    torch.manual_seed(0)
    model = build_classifier("packaged", "mean", {0: "negative", 1: "positive"}, 0.0).eval()
    tokenizer = load_tokenizer("packaged")
    ids = [tokenizer(t)["input_ids"] for t in ["a gripping film", "dull and far too long, sadly"]]
    batch = collate(ids, [1, 0], tokenizer.pad_token_id, tokenizer.sep_token_id)
    own = model(**batch.inputs(), labels=batch.labels).loss.detach()
    loss = preserving_loss(resolve_model_source("packaged"), weight=5.0)
    assert float(loss(model, batch, None).detach()) == pytest.approx(float(own), abs=1e-4)  # the start is the parent
    with torch.no_grad():  # bend the encoder: its embeddings leave the parent's
        model.bert.encoder.layer[-1].output.dense.weight.mul_(-3.0)
    bent_own = float(model(**batch.inputs(), labels=batch.labels).loss)
    bent = float(loss(model, batch, None))
    assert bent > bent_own + 0.05 and bent <= bent_own + 5.0 * 2.0


def test_embedding_preservation_is_refused_where_it_does_not_apply():
    from bertops.errors import ConfigError
    from bertops.tasks.classification.finetune import training_spec
    from bertops.training.preserve import refuse_preservation

    with pytest.raises(ConfigError, match="pooling=mean or cls"):
        smoke_config(["finetune.embedding_preservation=1.0", "finetune.pooling=siamese"])
    with pytest.raises(ConfigError, match="the NER task does not add the term"):
        refuse_preservation(smoke_config(["finetune.embedding_preservation=1.0"]).finetune, "NER")
    refuse_preservation(smoke_config().finetune, "NER")  # 0: nothing to refuse
    spec = training_spec(smoke_config(["finetune.embedding_preservation=1.0"]), Path("."))
    assert spec.loss is not None and spec.lineage["embedding_preservation"] == 1.0
    assert training_spec(smoke_config(), Path(".")).loss is None


def test_the_cli_refuses_an_encoder_without_embedding_only_and_an_unknown_embedding_model():
    from typer.testing import CliRunner

    from bertops.cli import app
    from tests.conftest import REPO

    params = ["--params", str(REPO / "params.yaml")]
    result = CliRunner().invoke(app, ["package", "--encoder", "some/encoder", *params])
    assert result.exit_code == 2 and "--encoder is for --embedding-only" in result.output
    bad = CliRunner().invoke(app, ["package", *params, "-s", "serve.embedding_model=Not A Name"])
    assert bad.exit_code == 2 and "serve.embedding_model" in bad.output
