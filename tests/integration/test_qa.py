"""Extractive QA (SQuAD v1.1) through every stage: validation naming bad rows, article-level
split, doc-stride windows, training on spans, official EM/F1, the gate, and POST /answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, datasets_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def squad(extra: list[str] = ()):
    from bertops.config import load_config

    return load_config(
        REPO / "params.yaml",
        REPO / "configs" / "squad.yaml",
        [
            f"ingest.search_paths=['{datasets_root() / 'squad-v1.1'}']",
            "prepare.max_train_rows=240",
            "prepare.max_eval_rows=60",
            "prepare.max_length=192",
            "prepare.doc_stride=64",
            "finetune.max_steps=30",
            "finetune.progress=false",
            "finetune.lr=3e-4",
            "finetune.checkpoint_every=0",
            "evaluate.latency_requests=10",
            # 30 steps reach F1 ~0.17 on the 60 held-out questions; an untrained head scores 0.08
            # (spans of frequent words overlap by chance), so the floor sits between the two
            "gate.min_qa_f1=0.13",
            "gate.max_p95_latency_ms=5000",
            "serve.port=3925",
            # the smoke profile's retrieval benchmark: 60 paragraphs (400 is the full profile's)
            "evaluate.embedding.retrieval.paragraphs=60",
            "gate.embedding_margin=0.15",
            *extra,
        ],
    )


def test_an_answer_not_in_its_context_fails_validation_naming_the_question(tmp_path: Path):
    from bertops.data.ingest import ingest
    from bertops.data.validation import ValidationFailed, validate

    document = json.loads((datasets_root() / "squad-v1.1" / "dev-v1.1.json").read_text())
    document["data"] = document["data"][:2]
    qa = document["data"][1]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 3  # the text no longer sits at its offset
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "dev-v1.1.json").write_text(json.dumps(document))
    cfg = squad([f"ingest.search_paths=['{tmp_path / 'corpus'}']"])
    ingest(cfg, tmp_path)
    with pytest.raises(ValidationFailed) as failure:
        validate(cfg, tmp_path)
    message = str(failure.value)
    assert "answer text matches the context at answer_start" in message and qa["id"] in message, message


def test_qa_trains_evaluates_gates_and_answers(tmp_path: Path):
    from bertops import server
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate
    from bertops.packaging import package, promote
    from bertops.tasks.qa.prepare import load_split
    from bertops.training.finetune import finetune

    cfg = squad()
    ingest(cfg, tmp_path)
    validate(cfg, tmp_path)
    prepare(cfg, tmp_path)
    train, _ = load_split(cfg, tmp_path, "train")
    evals, features = load_split(cfg, tmp_path, "eval")
    assert len(train) == 240 and len(evals) == 60 and not {e.title for e in train} & {e.title for e in evals}
    assert len(features) >= len(evals)  # long contexts give several windows
    result = finetune(cfg, tmp_path)
    assert result.steps == 30 and result.validation_metric == "squad_f1"
    report = evaluate(cfg, tmp_path)
    assert report["task"] == "qa" and report["examples"] == 60 and report["f1"] >= 0.13
    assert gate(cfg, tmp_path).approved

    packaged = package(cfg, tmp_path)
    promote(cfg, tmp_path)
    from tests.integration.conftest import missing_stage_outputs

    # every output the DVC stages declare, so the run can be recorded as an experiment (and `dvc repro` ends)
    stages = ["ingest", "validate", "prepare", "finetune", "evaluate", "gate", "package"]
    assert missing_stage_outputs(cfg, tmp_path, stages) == []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        url = server.start_detached(cfg, timeout=240)
        context = evals[0].context
        reply = httpx.post(
            f"{url}/answer", json={"questions": [{"question": evals[0].question, "context": context}]}, timeout=60
        )
        assert reply.status_code == 200, reply.text
        (answer,) = reply.json()
        assert context[answer["start"] : answer["end"]] == answer["text"] and 0 <= answer["score"] <= 1
        assert answer["model_version"] == packaged.model_tag and answer["windows"] >= 1
        for bad in (
            {"questions": [{"question": "who?"}]},
            {"questions": []},
            {"questions": [{"question": " ", "context": "x"}]},
        ):
            assert httpx.post(f"{url}/answer", json=bad, timeout=30).status_code == 400, bad
        assert httpx.get(f"{url}/metadata", timeout=10).json()["task"] == "qa"
        from tests.integration.conftest import input_drift_is_watched

        input_drift_is_watched(cfg, tmp_path, url, packaged, [context])
    finally:
        server.stop(cfg)
        os.chdir(cwd)
