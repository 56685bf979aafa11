"""Slices, behavioural checks and serving cost: the pure parts of `evaluate`."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from bertops.config import ConfigError, SliceConfig
from bertops.evaluation.behaviour import BehaviourCasesError, load_cases, perturb, run_behaviour
from bertops.evaluation.serving_cost import latency_profile, model_size_mb
from bertops.evaluation.slices import slice_masks, slice_metrics
from tests.conftest import REPO, smoke_config, tiny_bert_classifier

TEXTS = ["it is not good", "a fine film", "does n't work , but the cast is great", "Nothing works", "noted"]


def test_slices_combine_token_bounds_and_whole_word_keywords():
    slices = {
        "short": SliceConfig(max_tokens=5),
        "negation": SliceConfig(keywords=["not", "n't", "nothing"]),
        "long_negation": SliceConfig(min_tokens=6, keywords=["n't"]),
    }
    masks = slice_masks(TEXTS, np.array([6, 5, 12, 4, 3]), slices)
    assert masks["short"].tolist() == [False, True, False, True, True]
    # "noted" does not match "not"; "Nothing" matches case-insensitively; "n't" matches as a word
    assert masks["negation"].tolist() == [True, False, True, True, False]
    assert masks["long_negation"].tolist() == [False, False, True, False, False]


def test_slice_metrics_per_slice_and_empty_slices():
    y_true, y_pred = np.array([0, 1, 1, 0, 1]), np.array([0, 1, 0, 0, 0])
    masks = {"all": np.ones(5, bool), "first_two": np.array([1, 1, 0, 0, 0], bool), "none": np.zeros(5, bool)}
    out = slice_metrics(y_true, y_pred, masks, 2)
    assert out["all"]["accuracy"] == pytest.approx(0.6) and out["all"]["examples"] == 5
    assert out["first_two"] == {"examples": 2, "accuracy": 1.0, "macro_f1": 1.0}
    assert out["none"] == {"examples": 0, "accuracy": None, "macro_f1": None}


@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluate.slices={empty: {}}", "needs min_tokens, max_tokens or keywords"),
        ("evaluate.slices={bad: {min_tokens: 9, max_tokens: 3}}", "min_tokens must be <= max_tokens"),
        ("evaluate.slices={bad: {max_token: 3}}", "unknown key"),
    ],
)
def test_a_bad_slice_definition_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        smoke_config([override])


def test_typo_and_name_perturbations_are_deterministic_and_real():
    text = "Mary gives a wonderful performance with John."
    typo = perturb(text, "typo", [])
    assert typo != text and len(typo) == len(text) and sorted(typo) == sorted(text)
    assert typo == perturb(text, "typo", [])
    swapped = perturb(text, "names", ["Mary", "John", "Olga"])
    assert (
        "Mary" not in swapped.split()[0]
        and swapped.endswith(".")
        and swapped == perturb(text, "names", ["Mary", "John", "Olga"])
    )


def _keyword_model(texts: list[str]) -> np.ndarray:
    """A toy sentiment model: positive iff it sees "good" and no "not"."""
    positive = np.array([0.9 if ("good" in t and "not" not in t) else 0.2 for t in texts])
    return np.stack([1 - positive, positive], axis=1)


def _write_cases(tmp_path: Path, cases: dict) -> Path:
    path = tmp_path / "cases.yaml"
    path.write_text(yaml.safe_dump(cases))
    return path


def test_behaviour_pass_rates_and_failures_per_kind(tmp_path: Path):
    path = _write_cases(
        tmp_path,
        {
            "labels": ["negative", "positive"],
            "names": ["Ann", "Bob"],
            "min_change": 0.1,
            "mft": [{"text": "good film", "label": "positive"}, {"text": "great film", "label": "positive"}],
            "inv": [{"text": "Ann was good", "perturb": "names"}, {"text": "a good film", "perturb": "typo"}],
            "dir": [
                {"text": "good", "edited": "not good", "label": "positive", "direction": "down"},
                {"text": "bad", "edited": "bad!", "label": "positive", "direction": "up"},
                {"text": "good", "edited": "good!", "label": "positive", "direction": "up"},
            ],  # saturated: passes
        },
    )
    report = run_behaviour(load_cases(path), _keyword_model, ["negative", "positive"])
    assert report["mft"]["pass_rate"] == 0.5 and report["mft"]["failures"][0]["text"] == "great film"
    # the typo is deterministic: "good" has no swappable inner pair, so "film" becomes "flim" and the toy
    # model (which reads "good") keeps its answer; the names swap keeps it too
    assert perturb("a good film", "typo", ["Ann", "Bob"]) == "a good flim"
    assert report["inv"]["cases"] == 2 and report["inv"]["passed"] == 2
    assert report["dir"]["passed"] == 2 and [f["edited"] for f in report["dir"]["failures"]] == ["bad!"]


@pytest.mark.parametrize(
    "cases, message",
    [
        ({"labels": ["negative", "positive"], "mft": [{"text": "x", "label": "neutral"}]}, "not in `labels`"),
        (
            {
                "labels": ["negative", "positive"],
                "inv": [{"text": "no names here", "perturb": "names"}],
                "names": ["A", "B"],
            },
            "contains none of the listed names",
        ),
        ({"labels": ["negative", "positive"], "inv": [{"text": "a b c", "perturb": "typo"}]}, "no word of 4"),
        ({"labels": ["negative", "positive"], "mft": [{"txt": "x", "label": "positive"}]}, "mft.0"),
    ],
)
def test_a_bad_cases_file_is_named(tmp_path: Path, cases, message):
    with pytest.raises(BehaviourCasesError, match=message):
        load_cases(_write_cases(tmp_path, cases))


def test_cases_for_other_labels_are_refused(tmp_path: Path):
    cases = load_cases(_write_cases(tmp_path, {"labels": ["neg", "pos"], "mft": [{"text": "x", "label": "pos"}]}))
    with pytest.raises(BehaviourCasesError, match="written for labels"):
        run_behaviour(cases, _keyword_model, ["negative", "positive"])


def test_the_shipped_sst2_cases_load():
    cases = load_cases(REPO / "data" / "behaviour" / "sst2.yaml")
    assert len(cases.mft) >= 30 and len(cases.inv) >= 30 and len(cases.dir) >= 20


def test_model_size_counts_weight_files_only(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 2_500_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.bin").write_bytes(b"\0" * 500_000)
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * 9_000_000)
    assert model_size_mb(tmp_path) == 3.0


def test_latency_profile_orders_percentiles():
    calls = []
    out = latency_profile(lambda t: calls.append(t), ["a", "b"], requests=50, warmup=3)
    assert len(calls) == 53 and out["requests"] == 50 and 0 <= out["p50_ms"] <= out["p95_ms"]


def test_latency_rounds_alternate_the_order_and_take_medians_per_round():
    import time

    from bertops.evaluation.serving_cost import latency_rounds

    order: list[str] = []

    def side(name: str, ms: float):
        def request(_):
            order.append(name)
            time.sleep(ms / 1000)

        return request

    timed = latency_rounds({"candidate": side("candidate", 2.0), "champion": side("champion", 4.0)}, ["t"], 25, 5)
    warm = 5  # min(10, per_round) warm-up calls per side, candidate first
    rounds = [order[warm * 2 + 10 * r : warm * 2 + 10 * (r + 1)] for r in range(5)]
    assert [r[0] for r in rounds] == ["candidate", "champion", "candidate", "champion", "candidate"]
    assert all(r[:5] == [r[0]] * 5 and r[5:] == [r[5]] * 5 for r in rounds)  # a side's round runs together
    assert timed["candidate"]["requests"] == 25 and len(timed["candidate"]["p95_ms_rounds"]) == 5
    ratio = timed["p95_ratio"]
    assert ratio["of"] == "candidate / champion" and 0.3 < ratio["median"] < 0.8
    assert ratio["spread"][0] <= ratio["median"] <= ratio["spread"][1]
    assert timed["candidate"]["p50_ms"] <= timed["candidate"]["p95_ms"]


def test_time_against_champion_times_alone_without_production():
    from bertops.evaluation.serving_cost import time_against_champion

    latency, against = time_against_champion(lambda _: None, None, ["a"], 20, 4)
    assert against is None and latency["rounds"] == 4 and latency["requests"] == 20


def _agreement(int8_passed: bool, onnx_passed: bool = True) -> dict:
    runtime = {"max_abs_logit_diff": 0.3, "accuracy": 0.85, "file": "onnx/x.onnx"}
    return {
        "examples": 1347,
        "torch_accuracy": 0.90,
        "runtimes": {"onnx": {**runtime, "passed": onnx_passed}, "onnx-int8": {**runtime, "passed": int8_passed}},
    }


def test_auto_serves_the_fastest_runtime_that_passed_its_check():
    from bertops.models.export import choose_runtime

    assert choose_runtime(_agreement(True), "auto") == "onnx-int8"
    assert choose_runtime(_agreement(False), "auto") == "onnx"  # int8 lost too much accuracy
    assert choose_runtime(_agreement(False, False), "auto") == "torch"
    assert choose_runtime(_agreement(False, False), "torch") == "torch"


def test_an_int8_runtime_that_lost_too_much_accuracy_is_refused_by_name():
    from bertops.models.export import ExportCheckFailed, choose_runtime

    refused = r"serve.runtime=onnx-int8 failed its agreement check.*0.8500 vs 0.9000"
    with pytest.raises(ExportCheckFailed, match=refused):
        choose_runtime(_agreement(False), "onnx-int8")
    assert choose_runtime(_agreement(True), "onnx-int8") == "onnx-int8"


def test_the_fp32_onnx_runtime_answers_a_text_the_same_in_any_batch(tmp_path: Path):
    """What docs/operations.md promises for `serve.runtime: onnx`: a text's logits do not depend on the
    texts it is computed with or on their padding (dynamic int8, which scales a call's activations
    together, does not promise this)."""
    import torch

    from bertops.encoding import to_feeds
    from bertops.models.export import export_onnx, onnx_session

    model = tiny_bert_classifier()
    with torch.no_grad():  # weights large enough that different texts get clearly different logits
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.normal_(0.0, 0.5)

    class Sample:  # export_onnx only needs a tokenizer's sample inputs
        def __call__(self, texts, padding=True, return_tensors="pt"):
            feeds = to_feeds([[2, 5, 6, 3], [2, 7, 3]], [[0] * 4, [0] * 3], 0)
            return {name: torch.from_numpy(value) for name, value in feeds.items()}

    export_onnx(model, Sample(), tmp_path / "model.onnx")
    session = onnx_session(tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    rows = [[2, *rng.integers(4, 50, size).tolist(), 3] for size in (3, 9, 1, 17, 6, 12, 4, 25)]
    types = [[0] * len(row) for row in rows]

    def logits(index: list[int]) -> np.ndarray:
        return session.run(["logits"], to_feeds([rows[i] for i in index], [types[i] for i in index], 0))[0]

    alone = np.concatenate([logits([i]) for i in range(len(rows))])
    together = logits(list(range(len(rows))))  # every row padded to the longest
    reordered = logits([7, 3, 0, 5])  # other company, other padding
    assert np.abs(alone - together).max() < 1e-5
    assert np.abs(alone[[7, 3, 0, 5]] - reordered).max() < 1e-5
    with torch.inference_mode():  # and the answers are PyTorch's
        expected = model(**{k: torch.from_numpy(v) for k, v in to_feeds([rows[0]], [types[0]], 0).items()}).logits
    assert np.abs(alone[0] - expected.numpy()[0]).max() < 1e-4
    assert np.abs(alone[0] - alone[1]).max() > 0.1  # different texts, different answers: the check is not vacuous
