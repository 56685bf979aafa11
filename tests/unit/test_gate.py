import json

import pytest

from bertops.evaluation.gate import IncompleteReport, decide
from tests.conftest import smoke_config

POLICY = smoke_config(
    [
        "gate.min_accuracy=0.9",
        "gate.min_macro_f1=0.85",
        "gate.max_ece=0.1",
        "gate.max_p95_latency_ms=50",
        "gate.max_p95_latency_ratio=1.25",
        "gate.max_model_size_mb=150",
        "gate.min_behaviour_pass_rate={mft: 0.9, inv: 0.8, dir: 0.7}",
        "gate.non_inferiority_margin=0.02",
        "gate.slice_non_inferiority_margin=0.05",
        "gate.min_slice_examples=100",
    ]
).gate


def _report(**changes) -> dict:
    report = {
        "accuracy": 0.92,
        "macro_f1": 0.91,
        "ece": 0.05,
        "serving": {"model_size_mb": 90.9, "latency": {"p50_ms": 8.0, "p95_ms": 12.0}},
        "behaviour": {"mft": {"pass_rate": 0.95}, "inv": {"pass_rate": 0.9}, "dir": {"pass_rate": 0.8}},
        "model_sha256": "abc",
    }
    for dotted, value in changes.items():
        node = report
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return report


def test_approves_when_every_threshold_holds():
    decision = decide(_report(), POLICY)
    assert decision.approved and decision.reasons == []
    assert {c.name for c in decision.checks} == {
        "accuracy",
        "macro_f1",
        "ece",
        "p95 latency ms",
        "model size MB",
        "behaviour mft pass rate",
        "behaviour inv pass rate",
        "behaviour dir pass rate",
    }


@pytest.mark.parametrize(
    "changes, failing",
    [
        ({"accuracy": 0.89}, "accuracy"),
        ({"macro_f1": 0.5}, "macro_f1"),
        ({"ece": 0.2}, "ece"),
        ({"accuracy": float("nan")}, "accuracy"),
        ({"serving__latency__p95_ms": 51.0}, "p95 latency ms"),
        ({"serving__model_size_mb": 420.0}, "model size MB"),
        ({"behaviour__inv__pass_rate": 0.5}, "behaviour inv pass rate"),
    ],
)
def test_rejects_naming_the_failed_check(changes, failing):
    decision = decide(_report(**changes), POLICY)
    assert not decision.approved
    assert [c.name for c in decision.checks if not c.passed] == [failing]
    assert decision.reasons[0].startswith(failing)
    assert f"- {decision.reasons[0]}" in decision.to_markdown()


@pytest.mark.parametrize(
    "remove, named",
    [
        ("accuracy", "'accuracy'"),
        ("serving", "'serving.latency.p95_ms'"),
        ("behaviour", "'behaviour.mft.pass_rate'"),
    ],
)
def test_a_report_missing_a_metric_the_policy_needs_is_an_error_not_a_verdict(remove, named):
    report = _report()
    del report[remove]
    with pytest.raises(IncompleteReport, match=named):
        decide(report, POLICY)


def test_a_threshold_set_to_null_is_not_gated():
    policy = POLICY.model_copy(update={"max_p95_latency_ms": None, "min_behaviour_pass_rate": None})
    report = _report()
    del report["behaviour"]
    decision = decide(report, policy)
    assert decision.approved and "p95 latency ms" not in {c.name for c in decision.checks}


def test_boundaries_are_inclusive():
    assert decide(_report(accuracy=0.9, macro_f1=0.85, ece=0.1, serving__latency__p95_ms=50.0), POLICY).approved


def test_decision_renders_as_json_and_markdown():
    decision = decide(_report(accuracy=0.5), POLICY)
    record = json.loads(decision.to_json())
    assert record["approved"] is False and "accuracy" in record["reasons"][0]
    assert "REJECTED" in decision.to_markdown() and "| accuracy | 0.5000 | >= 0.9 | FAIL |" in decision.to_markdown()


GOOD = _report()


def _paired(low: float, high: float, diff: float, examples: int = 872) -> dict:
    return {
        "accuracy": 0.92 - diff,
        "difference": diff,
        "ci_low": low,
        "ci_high": high,
        "confidence": 0.95,
        "mcnemar_p": 0.5,
        "only_challenger_right": 5,
        "only_champion_right": 4,
        "examples": examples,
    }


def _champion(low: float, high: float, diff: float, slices: dict | None = None, p95_ms: float = 12.0) -> dict:
    """Production's record as evaluate writes it: timed in the same alternating rounds as the
    candidate (whose p95 is 12 ms in every round), so the per-round ratio is 12 / p95_ms."""
    return {
        "version": "v1",
        "model_sha256": "teacher-weights",
        "latency": {"p50_ms": p95_ms * 0.8, "p95_ms": p95_ms},
        "p95_ratio": {"median": 12.0 / p95_ms, "spread": [11.0 / p95_ms, 13.0 / p95_ms]},
        **_paired(low, high, diff),
        "slices": slices or {},
    }


# A distilled student of production: 1.5 points less accurate (0.92 vs 0.935), CI [-2.5, -0.5]
# points, below the non-inferiority margin; p95 12 ms vs production's 24 ms in the same rounds.
STUDENT = {**GOOD, "distilled_from": "teacher-weights", "champion": _champion(-0.025, -0.005, -0.015, p95_ms=24.0)}


def test_speed_trade_accepts_a_much_faster_student_on_the_lower_bound_of_its_accuracy():
    assert not decide(STUDENT, POLICY.model_copy(update={"speed_trade": None})).approved  # plain non-inferiority
    decision = decide(STUDENT, POLICY)
    assert decision.approved, decision.reasons
    names = {c.name: c for c in decision.checks}
    assert names["speed-up vs production v1 (p95 ratio, median over alternating rounds)"].value == pytest.approx(2.0)
    # the CI's lower bound, not the point estimate: (0.935 - 0.025) / 0.935
    ratio = names["accuracy ratio vs production v1, CI lower bound (speed trade)"]
    assert ratio.value == pytest.approx(0.91 / 0.935) and ratio.value < 0.92 / 0.935
    assert "speed trade: 2.00x faster" in decision.to_markdown()


def test_speed_trade_judges_the_ci_lower_bound_not_the_point_estimate():
    # point estimate 0.92 / 0.935 = 98.4% would pass min_accuracy_ratio 0.97; the lower bound
    # (0.935 - 0.04) / 0.935 = 95.7% does not
    wide = {**STUDENT, "champion": _champion(-0.04, 0.01, -0.015, p95_ms=24.0)}
    decision = decide(wide, POLICY)
    assert not decision.approved and any("CI lower bound" in r for r in decision.reasons)


def test_speed_trade_is_only_for_a_distilled_student_of_production():
    other = {**STUDENT, "distilled_from": None}  # a fast challenger that is not production's student
    decision = decide(other, POLICY)
    assert not decision.approved and any("CI low of difference" in r for r in decision.reasons)
    assert "not a distilled student of production" in decision.comparison["speed_trade"]
    stranger = {**STUDENT, "distilled_from": "some-other-teacher"}  # a student of another model
    assert not decide(stranger, POLICY).approved


def test_speed_trade_rejects_a_student_too_slow_or_too_inaccurate():
    slow = {**STUDENT, "champion": _champion(-0.025, -0.005, -0.015, p95_ms=18.0)}  # 1.5x: must be non-inferior
    decision = decide(slow, POLICY)
    assert not decision.approved and any("CI low of difference" in r for r in decision.reasons)
    weak = {**STUDENT, "champion": _champion(-0.08, -0.03, -0.055, p95_ms=24.0)}  # lower bound 0.895/0.975 = 91.8%
    decision = decide(weak, POLICY)
    assert not decision.approved and any("accuracy ratio" in r for r in decision.reasons)
    slices = {"negation": _paired(-0.2, -0.02, -0.08, examples=183)}  # a slice 8 points down
    decision = decide({**STUDENT, "champion": _champion(-0.025, -0.005, -0.015, slices, p95_ms=24.0)}, POLICY)
    assert not decision.approved and any("slice negation" in r for r in decision.reasons)


def test_speed_trade_needs_latencies_timed_in_the_same_rounds():
    champion = _champion(-0.025, -0.005, -0.015)
    del champion["p95_ratio"]
    with pytest.raises(IncompleteReport, match="speed_trade"):
        decide({**STUDENT, "champion": champion}, POLICY)


def test_with_a_champion_latency_is_judged_as_a_ratio_timed_in_the_same_rounds():
    # A busy machine: the candidate's p95 is 120 ms (far over the 50 ms floor), but production,
    # timed in the same alternating rounds, took 110 ms: a 1.09 ratio passes.
    busy = _report(serving__latency__p95_ms=120.0)
    decision = decide({**busy, "champion": _champion(-0.005, 0.02, 0.007, p95_ms=110.0)}, POLICY)
    names = [c.name for c in decision.checks]
    assert decision.approved, decision.reasons
    assert "p95 latency ms" not in names and "p95 latency / production v1's (median over alternating rounds)" in names
    # Without production, the same 120 ms fails the absolute floor.
    assert not decide(busy, POLICY).approved
    # A candidate 1.5x slower than production in the same rounds fails the ratio.
    slower = {**GOOD, "champion": _champion(-0.005, 0.02, 0.007, p95_ms=8.0)}
    decision = decide(slower, POLICY)
    assert not decision.approved and decision.reasons[0].startswith("p95 latency / production v1's")


def test_the_decision_names_the_runtime_it_judged():
    report = _report()
    report["serving"] = {**report["serving"], "runtime": "onnx-int8", "runtime_sha256": "f00d"}
    decision = decide(report, POLICY)
    assert (decision.runtime, decision.runtime_sha256) == ("onnx-int8", "f00d")
    assert json.loads(decision.to_json())["runtime"] == "onnx-int8"
    assert "**onnx-int8**" in decision.to_markdown()


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


def test_every_slice_large_enough_must_be_non_inferior():
    slices = {"short": _paired(-0.03, 0.04, 0.0, examples=300), "negation": _paired(-0.09, -0.01, -0.05, examples=150)}
    decision = decide({**GOOD, "champion": _champion(-0.005, 0.02, 0.007, slices)}, POLICY)
    assert not decision.approved
    assert [c.name for c in decision.checks if not c.passed] == [
        "slice negation: accuracy vs production (CI low of difference)"
    ]
    assert decision.comparison["slices"]["short"]["verdict"] == "non-inferior"
    assert decision.comparison["slices"]["negation"]["verdict"] == "inferior"
    assert "| negation | 150 |" in decision.to_markdown()


def test_a_slice_too_small_to_judge_is_reported_not_gated():
    slices = {"contrast": _paired(-0.3, 0.1, -0.1, examples=40)}
    decision = decide({**GOOD, "champion": _champion(-0.005, 0.02, 0.007, slices)}, POLICY)
    assert decision.approved
    assert decision.comparison["slices"]["contrast"]["verdict"].startswith("not judged")


def test_a_real_paired_comparison_within_the_noise_reads_non_inferior():
    """compare() -> decide() on fixed data: 4 of 872 examples flipped either way is noise."""
    import numpy as np

    from bertops.evaluation.stats import compare

    rng = np.random.default_rng(7)
    champion = rng.random(872) < 0.9
    challenger = champion.copy()
    right, wrong = np.flatnonzero(champion), np.flatnonzero(~champion)
    challenger[right[:6]] = False  # 6 newly wrong
    challenger[wrong[:4]] = True  # 4 newly right: 2 examples (0.2 points) worse overall
    result = compare(challenger, champion, 0.95, 2000, seed=0)
    assert result.difference == pytest.approx(-2 / 872) and result.mcnemar_p > 0.5
    champion_record = {
        "version": "v1",
        "accuracy": float(champion.mean()),
        "latency": {"p95_ms": 12.0},
        "p95_ratio": {"median": 1.0},
        **result.__dict__,
        "slices": {},
    }
    decision = decide({**GOOD, "champion": champion_record}, POLICY)
    assert decision.approved and decision.comparison["verdict"] == "non-inferior"


def test_a_task_judged_on_a_point_difference_names_the_production_model_it_was_compared_with():
    """QA (and NER) compare F1 with production's on the same examples, without a paired table: the
    decision still says which production version it was judged against, never "no production model"."""
    from bertops.tasks.qa.gate import gate_rules

    cfg = smoke_config(["gate.min_qa_f1=0.5", "gate.max_p95_latency_ms=500"])
    rules = gate_rules(cfg.gate)
    first = {"f1": 0.70, "serving": {"model_size_mb": 90.0, "latency": {"p95_ms": 40.0}}, "model_sha256": "b"}
    alone = decide(first, cfg.gate, rules)
    assert alone.approved and alone.champion is None and "thresholds alone" in alone.to_markdown()

    champion = {"version": "7j33", "f1": 0.7013, "p95_ratio": {"median": 0.98}}
    worse = decide({**first, "f1": 0.65, "champion": champion}, cfg.gate, rules)
    assert not worse.approved and worse.champion == "7j33"
    assert "SQuAD F1 vs production 7j33 (difference)" in [c.name for c in worse.checks]
    text = worse.to_markdown()
    assert "Compared with production 7j33" in text and "No production model yet" not in text
    assert json.loads(worse.to_json())["champion"] == "7j33"
