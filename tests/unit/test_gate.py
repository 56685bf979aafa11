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


GOOD = {"accuracy": 0.92, "macro_f1": 0.91, "ece": 0.05}


def _champion(low: float, high: float, diff: float) -> dict:
    return {"version": "v1", "accuracy": 0.92 - diff, "difference": diff, "ci_low": low, "ci_high": high,
            "confidence": 0.95, "mcnemar_p": 0.5, "only_challenger_right": 5, "only_champion_right": 4, "examples": 872}


def test_first_model_is_judged_on_thresholds_alone():
    decision = decide(GOOD, POLICY)
    assert decision.approved and decision.comparison is None
    assert "thresholds alone" in decision.to_markdown()


def test_a_candidate_within_the_noise_is_non_inferior_not_better():
    decision = decide({**GOOD, "champion": _champion(-0.008, 0.011, 0.001)}, POLICY)
    assert decision.approved and decision.comparison["verdict"] == "non-inferior"


def test_a_clearly_better_candidate_is_called_better():
    decision = decide({**GOOD, "champion": _champion(0.004, 0.03, 0.017)}, POLICY)
    assert decision.approved and decision.comparison["verdict"] == "better"


def test_a_worse_candidate_is_rejected_even_above_the_thresholds():
    decision = decide({**GOOD, "champion": _champion(-0.05, -0.01, -0.03)}, POLICY)
    assert not decision.approved and decision.comparison["verdict"] == "inferior"
    assert "accuracy vs production v1" in decision.reasons[0]
    assert "McNemar p" in decision.to_markdown()
