"""What the gate judges for NER: a floor on entity F1, and no worse than production's entity F1
beyond the non-inferiority margin."""

from __future__ import annotations

from bertops.config import GateConfig
from bertops.evaluation.gate import GateRules, required_floor


def gate_rules(policy: GateConfig) -> GateRules:
    floor = required_floor(policy.min_entity_f1, "min_entity_f1", "entity F1")
    return GateRules(
        (("entity F1", "entity_f1", floor, ">="),), paired=False, champion_metric=("entity F1", "entity_f1")
    )
