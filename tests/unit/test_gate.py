import json

import pytest

from bertops.evaluation.gate import decide
from tests.conftest import smoke_config

POLICY = smoke_config(["gate.min_accuracy=0.9", "gate.min_macro_f1=0.85", "gate.max_ece=0.1"]).gate


def test_approves_when_every_threshold_holds():
    decision = decide({"accuracy": 0.91, "macro_f1": 0.9, "ece": 0.05}, POLICY)
    assert decision.approved and decision.reasons == []


@pytest.mark.parametrize("metrics, failing", [
    ({"accuracy": 0.89, "macro_f1": 0.9, "ece": 0.05}, "accuracy"),
    ({"accuracy": 0.95, "macro_f1": 0.5, "ece": 0.05}, "macro_f1"),
    ({"accuracy": 0.95, "macro_f1": 0.9, "ece": 0.2}, "ece"),
    ({"accuracy": float("nan"), "macro_f1": 0.9, "ece": 0.05}, "accuracy"),
    ({"macro_f1": 0.9, "ece": 0.05}, "accuracy"),
])
def test_rejects_naming_the_failed_check(metrics, failing):
    decision = decide(metrics, POLICY)
    assert not decision.approved
    assert [c.name for c in decision.checks if not c.passed] == [failing]
    assert decision.reasons[0].startswith(failing)


def test_boundaries_are_inclusive():
    assert decide({"accuracy": 0.9, "macro_f1": 0.85, "ece": 0.1}, POLICY).approved


def test_decision_renders_as_json_and_markdown():
    decision = decide({"accuracy": 0.5, "macro_f1": 0.9, "ece": 0.05}, POLICY)
    record = json.loads(decision.to_json())
    assert record["approved"] is False and "accuracy" in record["reasons"][0]
    assert "REJECTED" in decision.to_markdown() and "| accuracy | 0.5000 | >= 0.9 | FAIL |" in decision.to_markdown()
