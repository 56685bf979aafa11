"""Token classification (CoNLL-2003 NER) through every stage: validation of CoNLL files, aligned
word-piece labels, training with entity-F1 checkpoint selection, entity-level evaluation, the
gate, and the served POST /tag returning entities with character offsets."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, datasets_root
from tests.integration.conftest import input_drift_is_watched

pytestmark = [pytest.mark.integration, pytest.mark.slow]


OVERRIDES = [
    f"ingest.search_paths=['{datasets_root() / 'conll2003'}']",
    "prepare.max_train_rows=400",
    "prepare.max_eval_rows=120",
    "finetune.max_steps=30",
    "finetune.batch_size=16",
    "finetune.progress=false",
    "finetune.lr=3e-4",
    "finetune.checkpoint_every=0",
    "evaluate.latency_requests=10",
    "gate.min_entity_f1=0.2",  # 30 steps reach ~0.33; an untrained tagger or all-"O" scores ~0
    "gate.max_p95_latency_ms=5000",
    "serve.port=3923",
    # the smoke profile's retrieval benchmark: 60 paragraphs (400 is the full profile's)
    "evaluate.embedding.retrieval.paragraphs=60",
    "gate.embedding_margin=0.15",
]


def conll(extra: list[str] = ()):
    from bertops.config import load_config

    return load_config(REPO / "params.yaml", REPO / "configs" / "conll2003.yaml", [*OVERRIDES, *extra])


def _corpus(tmp_path: Path, edit) -> Path:
    """A small CoNLL corpus from the real files, with one line changed by `edit(lines)`."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        lines = (datasets_root() / "conll2003" / name).read_text().splitlines()[:200]
        if name == "train.txt":
            edit(lines)
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    "line, replacement, expected",
    [
        (4, "rejects VBZ B-VP", "expected 4 columns (as on the first token row) but found 3"),  # a column missing
        (3, "EU NNP B-NP B-COMPANY", "tags inside the declared tag set"),  # an unknown tag
        (4, "rejects VBZ B-VP I-PER", "IOB2: an I-X tag follows B-X or I-X"),  # I-PER after B-ORG
    ],
)
def test_bad_conll_rows_fail_validation_naming_the_line(tmp_path: Path, line: int, replacement: str, expected: str):
    from bertops.data.ingest import ingest
    from bertops.data.validation import ValidationFailed, validate

    def edit(lines):
        lines[line - 1] = replacement

    cfg = conll([f"ingest.search_paths=['{_corpus(tmp_path, edit)}']"])
    ingest(cfg, tmp_path)
    with pytest.raises(ValidationFailed) as failure:
        validate(cfg, tmp_path)
    message = str(failure.value)
    assert expected in message, message
    assert f"train.txt:{line}" in message or f'"line": {line}' in message, message


def test_ner_trains_evaluates_gates_and_serves_entities(tmp_path: Path):
    import json

    from bertops import server
    from bertops.data.ingest import ingest
    from bertops.data.prepare import load_prepared, prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate
    from bertops.packaging import package, promote
    from bertops.training.finetune import finetune

    cfg = conll()
    ingest(cfg, tmp_path)
    validate(cfg, tmp_path)
    prepare(cfg, tmp_path)
    frames, id2label, _ = load_prepared(cfg, tmp_path)
    assert id2label[0] == "O" and len(id2label) == 9 and len(frames["eval"]) == 120
    result = finetune(cfg, tmp_path)
    assert result.steps == 30 and result.validation_metric == "entity_f1"
    report = evaluate(cfg, tmp_path)
    assert report["task"] == "ner" and report["entity_f1"] >= 0.2  # 30 steps already find entities
    assert set(report["per_type"]) <= {"PER", "ORG", "LOC", "MISC"} and report["serving"]["latency"]["p95_ms"] > 0
    assert not gate(conll(["gate.min_entity_f1=0.999"]), tmp_path).approved
    decision = gate(cfg, tmp_path)
    assert decision.approved and decision.checks[0].name == "entity F1"

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
        text = "Germany's Angela Merkel met Peter Blackburn of the European Union in Brussels on Monday."
        reply = httpx.post(f"{url}/tag", json={"texts": [text, "nothing to see here ."]}, timeout=60)
        assert reply.status_code == 200, reply.text
        first, second = reply.json()
        assert first["model_version"] == packaged.model_tag and not first["truncated"]
        for entity in first["entities"]:  # offsets point at the entity's text in the request
            assert text[entity["start"] : entity["end"]] == entity["text"] and entity["entity"] in (
                "PER",
                "ORG",
                "LOC",
                "MISC",
            )
            assert 0 < entity["score"] <= 1
        assert isinstance(second["entities"], list)
        assert httpx.post(f"{url}/tag", json={"texts": []}, timeout=30).status_code == 400
        assert httpx.post(f"{url}/tag", json={"texts": ["   "]}, timeout=30).status_code == 400
        assert httpx.post(f"{url}/classify", json={"texts": ["a"]}, timeout=30).status_code == 400
        assert json.loads(httpx.get(f"{url}/metadata", timeout=10).text)["task"] == "ner"
        # the CLI verb prints the task's own summary (run in the workspace, like a user would)
        from typer.testing import CliRunner

        from bertops.cli import app

        args = ["evaluate", "--params", str(REPO / "params.yaml"), "--profile", str(REPO / "configs/conll2003.yaml")]
        cli = CliRunner().invoke(app, args + [a for o in OVERRIDES for a in ("-s", o)])
        assert cli.exit_code == 0 and "Entity-level evaluation on 120 sentences" in cli.output, cli.output
        assert httpx.post(f"{url}/tag", json={"texts": [text]}, timeout=30).status_code == 200  # still answering
        input_drift_is_watched(cfg, tmp_path, url, packaged, [text, "nothing to see here .", text])
    finally:
        server.stop(cfg)
        os.chdir(cwd)
