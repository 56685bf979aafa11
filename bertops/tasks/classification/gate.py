"""What the gate judges for classification: accuracy, macro-F1, calibration and behaviour floors,
and the paired champion comparison (overall and per slice, with the speed trade)."""

from __future__ import annotations

from bertops.config import GateConfig
from bertops.evaluation.gate import GateRules, paired_accuracy_rules


def gate_rules(policy: GateConfig) -> GateRules:
    return paired_accuracy_rules(policy)
