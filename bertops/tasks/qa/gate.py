"""What the gate judges for QA: a floor on SQuAD F1, and no worse than production's F1 beyond the
non-inferiority margin."""

from __future__ import annotations

from bertops.config import GateConfig
from bertops.evaluation.gate import GateRules, required_floor


def gate_rules(policy: GateConfig) -> GateRules:
    floor = required_floor(policy.min_qa_f1, "min_qa_f1", "SQuAD F1")
    return GateRules((("SQuAD F1", "f1", floor, ">="),), paired=False, champion_metric=("SQuAD F1", "f1"))
