"""The search space is checked key by key before any trial starts; values reach the schema's types."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertops.config import config_from_dict
from bertops.errors import ConfigError
from bertops.tuning import cast_params, defaults_point, full_run_evaluations, tunable_keys, validate_space
from tests.conftest import smoke_config


def with_space(space: dict, **tune) -> object:
    tree = smoke_config().to_dict()
    tree["tune"].update(space=space, **tune)
    return config_from_dict(tree)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"finetune.lrr": {"loguniform": [1e-5, 1e-4]}}, ["'finetune.lrr'", "finetune.lr,", "finetune.dropout"]),
        ({"prepare.max_length": {"choice": [64, 128]}}, ["'prepare.max_length'", "finetune's"]),
        ({"finetune.num_workers": {"choice": [0, 1]}}, ["finetune.num_workers is set by the search itself"]),
        (
            {"finetune.lr": {"normal": [1e-4, 1e-5]}},
            ["finetune.lr", "'normal'", "loguniform, uniform, randint, choice"],
        ),
        ({"finetune.lr": {"uniform": [1e-5, 1e-4], "choice": [1e-4]}}, ["finetune.lr needs exactly one distribution"]),
        ({"finetune.lr": {}}, ["finetune.lr needs exactly one distribution"]),
        ({"finetune.lr": {"loguniform": [1e-5, 1e-4, 1e-3]}}, ["finetune.lr", "exactly two numbers"]),
        ({"finetune.lr": {"uniform": [1e-4]}}, ["finetune.lr", "exactly two numbers"]),
        ({"finetune.lr": {"uniform": ["a", "b"]}}, ["finetune.lr", "exactly two numbers"]),
        ({"finetune.lr": {"uniform": [1e-4, 1e-4]}}, ["finetune.lr", "is empty"]),
        ({"finetune.lr": {"loguniform": [2e-4, 1e-5]}}, ["finetune.lr", "is empty"]),
        ({"finetune.weight_decay": {"loguniform": [0.0, 0.1]}}, ["finetune.weight_decay", "low > 0"]),
        ({"finetune.epochs": {"randint": [1.0, 3.5]}}, ["finetune.epochs", "randint needs two integers"]),
        ({"finetune.dropout": {"choice": []}}, ["finetune.dropout", "choice list is empty"]),
        ({"finetune.batch_size": {"uniform": [8, 64]}}, ["finetune.batch_size is an integer", "randint: [8, 65]"]),
        ({"finetune.epochs": {"loguniform": [1, 4]}}, ["finetune.epochs is an integer", "choice"]),
        ({"finetune.pooling": {"uniform": [0, 1]}}, ["finetune.pooling", "choice"]),
        ({"finetune.dropout": {"choice": [0.1, 1.5]}}, ["finetune.dropout", "1.5", "less than 1"]),
        ({"finetune.dropout": {"uniform": [0.0, 1.0]}}, ["finetune.dropout", "value 1.0", "less than 1"]),
        ({"finetune.lr": {"loguniform": [1e-5, 2.0]}}, ["finetune.lr", "value 2.0", "less than 1"]),
        (
            {"finetune.epochs": {"randint": [0, 3]}},
            ["finetune.epochs", "randint value 0", "greater than or equal to 1"],
        ),
        ({"finetune.pooling": {"choice": ["mean", "max"]}}, ["finetune.pooling", "'max'"]),
        ({"finetune.batch_size": {"choice": [16, "big"]}}, ["finetune.batch_size", "'big'", "integer"]),
        ({}, ["tune.space is empty"]),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(space: dict, expected: list[str]):
    with pytest.raises(ConfigError) as caught:
        validate_space(with_space(space))
    for part in expected:
        assert part in str(caught.value), str(caught.value)


def test_the_default_space_becomes_ray_tune_domains():
    from ray.tune.search.sample import Categorical, Float

    cfg = smoke_config()
    space = validate_space(cfg)
    assert list(space) == list(cfg.tune.space) and "finetune.lr" in space
    lr = space["finetune.lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == tuple(cfg.tune.space["finetune.lr"]["loguniform"])
    assert isinstance(space["finetune.batch_size"], Categorical)
    assert space["finetune.batch_size"].categories == cfg.tune.space["finetune.batch_size"]["choice"]


def test_randint_excludes_its_high_end_when_checking_values():
    """epochs randint [1, 4] draws 1..3, all valid; the refused cases above show each end is checked."""
    from ray.tune.search.sample import Integer

    space = validate_space(
        with_space({"finetune.epochs": {"randint": [1, 4]}, "finetune.max_steps": {"randint": [0, 5]}})
    )
    assert isinstance(space["finetune.epochs"], Integer) and (
        space["finetune.epochs"].lower,
        space["finetune.epochs"].upper,
    ) == (1, 4)


def test_the_defaults_point_is_the_configs_current_values():
    cfg = smoke_config(["finetune.lr=3.0e-5", "finetune.dropout=0.0"])
    point = defaults_point(cfg)
    assert point == {
        "finetune.lr": 3.0e-5,
        "finetune.warmup_ratio": cfg.finetune.warmup_ratio,
        "finetune.dropout": 0.0,
        "finetune.batch_size": 16,  # the smoke profile's
        "finetune.epochs": 2,
        "finetune.layer_decay": 1.0,
    }
    assert list(point) == list(cfg.tune.space)


def test_sampled_values_take_the_schemas_types():
    values = cast_params(
        {
            "finetune.batch_size": np.int64(16),
            "finetune.lr": np.float64(3e-5),
            "finetune.epochs": 2.0,
            "finetune.dropout": 0,
            "finetune.pooling": np.str_("cls"),
        }
    )
    assert values == {"batch_size": 16, "lr": 3e-5, "epochs": 2, "dropout": 0.0, "pooling": "cls"}
    assert [type(v) for v in values.values()] == [int, float, int, float, str]  # plain types: YAML-ready
    # the trial's config accepts them
    tree = smoke_config().to_dict()
    tree["finetune"].update(values)
    assert config_from_dict(tree).finetune.epochs == 2


def test_tunable_keys_leave_out_what_the_search_sets():
    keys = tunable_keys()
    assert "finetune.lr" in keys and "finetune.model" in keys
    assert not {"finetune.num_workers", "finetune.num_threads", "finetune.device", "finetune.progress"} & set(keys)


def test_a_full_run_counts_the_evaluations_the_loop_makes():
    cfg = smoke_config().finetune
    # 100 rows / 10 per batch = 10 steps an epoch, 2 epochs: every 4 steps (4, 8, 12, 16, 20) + epoch end at 10
    setting = cfg.model_copy(update={"batch_size": 10, "epochs": 2, "eval_every": 4, "max_steps": 0})
    assert full_run_evaluations(setting, 100, evaluate_start=False) == 6
    assert full_run_evaluations(setting, 100, evaluate_start=True) == 7
    # eval_every 0: once per epoch; max_steps ends the run (and evaluates) mid-epoch
    assert full_run_evaluations(setting.model_copy(update={"eval_every": 0}), 100, evaluate_start=False) == 2
    assert full_run_evaluations(setting.model_copy(update={"max_steps": 5}), 100, evaluate_start=False) == 2
    assert full_run_evaluations(setting.model_copy(update={"max_steps": 8}), 95, evaluate_start=False) == 2


def record(trial_id: str, lr: float, epochs: int, status: str, scores: list[float], error: str | None = None):
    from bertops.tuning import TrialRecord

    rows = [{"step": 2 * (i + 1), "validation_accuracy": s} for i, s in enumerate(scores)]
    return TrialRecord(
        trial_id=trial_id,
        params={"finetune.lr": lr, "finetune.epochs": epochs},
        status=status,
        evaluations=len(rows),
        best_validation_accuracy=max(scores, default=None),
        minutes=0.5,
        error=error,
        validation=rows,
    )


SPACE = {"finetune.lr": {"loguniform": [1e-5, 1e-3]}, "finetune.epochs": {"choice": [1, 2, 3]}}


def test_the_best_finished_setting_becomes_a_profile_over_params_yaml(tmp_path):
    from bertops.config import load_config
    from bertops.tuning import summarise
    from tests.conftest import REPO

    cfg = with_space(SPACE)
    search = tmp_path / "reports" / "tune" / "sst2"
    search.mkdir(parents=True)
    trials = [
        record("a_00002", 2e-4, 1, "error", [0.5, 0.95], error="RuntimeError: out of memory | on cpu"),
        record("a_00001", 3e-5, 3, "completed", [0.7, 0.85, 0.8]),
        record("a_00000", cfg.finetune.lr, cfg.finetune.epochs, "completed", [0.6, 0.8]),
    ]
    summary = summarise(cfg, tmp_path, search, trials)
    assert [t.trial_id for t in summary.trials] == ["a_00000", "a_00001", "a_00002"]
    assert summary.trials[0].defaults and not any(t.defaults for t in summary.trials[1:])
    # a trial that failed never wins, whatever it scored before failing
    assert (summary.best_trial, summary.best_score, summary.defaults_score) == ("a_00001", 0.85, 0.8)
    assert summary.gain == 0.05 and summary.failed == 1 and summary.early_stopped == 0
    assert summary.best_params == {"finetune.lr": 3e-5, "finetune.epochs": 3}

    profile = tmp_path / "configs" / "tuned-sst2.yaml"
    assert summary.profile == str(profile)
    text = profile.read_text()
    assert "reports/tune/sst2" in text and "0.8500" in text and "the eval split was not used" in text
    tuned = load_config(REPO / "params.yaml", profile)
    assert (tuned.finetune.lr, tuned.finetune.epochs) == (3e-5, 3)

    md = (search / "results.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| a_")]
    assert [r.split(" | ")[0] for r in rows] == ["| a_00002", "| a_00001", "| a_00000 (defaults)"]  # by score
    assert "out of memory \\| on cpu" in rows[0]  # a | in an error does not break the table
    assert "+0.0500 over the defaults" in md
    saved = json.loads((search / "results.json").read_text())
    assert [t["status"] for t in saved["trials"]] == ["completed", "completed", "error"]
    assert (search / "trials.png").read_bytes()[:4] == b"\x89PNG"


def test_minutes_saved_is_each_stopped_trials_unfinished_schedule_at_its_own_pace(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertops.tuning import ELAPSED, SHARE, TrialRecord, remaining_minutes, summarise

    def trial(trial_id: str, status: str, shares: list, elapsed: list | None, minutes: float) -> TrialRecord:
        rows = [{"step": int(100 * s), "validation_accuracy": 0.5 + s / 10, SHARE: s} for s in shares]
        for row, seconds in zip(rows, elapsed or []):
            row[ELAPSED] = seconds
        return TrialRecord(trial_id, {"finetune.lr": 1e-4 * len(trial_id), "finetune.epochs": 2}, status, len(rows),
                           0.6, minutes, validation=rows)  # fmt: skip

    # a quarter of the schedule in 60 s of the loop's clock: 4 minutes a schedule, 3 left. The trial's
    # whole time (1.5 min) holds 0.5 min of set-up, which a full run pays once: not multiplied up (4.5)
    quarter = trial("c_00001", "stopped early", [0.25], [60], 1.5)
    # a step-0 evaluation (a probe) at 30 s: the pace is measured between the first and last evaluation
    probed = trial("c_00002", "stopped early", [0.0, 0.25, 0.5], [30, 90, 150], 3.0)
    # resumed after half its schedule, the loop's clock starts again: the pace is read since the resume
    resumed = trial("c_00003", "stopped early", [0.25, 0.5, 0.625, 0.75], [60, 120, 20, 50], 9.0)
    # no loop clock reported (an older search): the trial's whole time over its share
    unclocked = trial("c_00004", "stopped early", [0.5], None, 2.0)
    assert remaining_minutes(quarter) == pytest.approx(3.0)
    assert remaining_minutes(probed) == pytest.approx(2.0)
    assert remaining_minutes(resumed) == pytest.approx(1.0)
    assert remaining_minutes(unclocked) == pytest.approx(2.0)
    assert remaining_minutes(trial("c_00005", "completed", [0.5, 1.0], [60, 120], 2.5)) == 0.0  # ran to its end
    legacy = record("c_00006", 5e-4, 2, "stopped early", [0.6])  # no shares: one evaluation at step 2, 0.5 min
    assert remaining_minutes(legacy) is None

    cfg = with_space(SPACE)
    prepared = tmp_path / cfg.paths.prepared / cfg.ingest.dataset
    prepared.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["x"] * 8}), prepared / "train.parquet")
    full = full_run_evaluations(cfg.finetune.model_copy(update={"lr": 5e-4, "epochs": 2}), 8, evaluate_start=False)
    defaults = record("c_00000", cfg.finetune.lr, cfg.finetune.epochs, "completed", [0.7, 0.8])
    search = tmp_path / "search"
    search.mkdir()
    summary = summarise(cfg, tmp_path, search, [defaults, quarter, probed, resumed, unclocked, legacy])
    assert summary.early_stopped == 5
    # a search without shares counts the evaluations a full run would make (from the train file)
    assert summary.minutes_saved == pytest.approx(3.0 + 2.0 + 1.0 + 2.0 + (full - 1) * 0.5, abs=0.01)
    assert "trial-minutes saved by early stopping (estimate): " in (search / "results.md").read_text()


def test_when_every_trial_fails_no_profile_is_written_and_the_errors_are_named(tmp_path):
    from bertops.errors import BertopsError
    from bertops.tuning import summarise

    cfg = with_space(SPACE)
    search = tmp_path / "search"
    search.mkdir()
    trials = [
        record("b_00000", 1e-4, 2, "error", [], error="ConfigError: cannot load the tokenizer"),
        record("b_00001", 2e-4, 1, "error", [0.6], error="RuntimeError: NaN loss"),
    ]
    with pytest.raises(BertopsError) as caught:
        summarise(cfg, tmp_path, search, trials)
    assert "every trial of the search failed" in str(caught.value)
    assert "b_00000: ConfigError: cannot load the tokenizer" in str(caught.value)
    assert "b_00001: RuntimeError: NaN loss" in str(caught.value)
    assert not (tmp_path / "configs").exists()
    assert json.loads((search / "results.json").read_text())["best_trial"] is None


def test_the_cli_refuses_a_bad_space_before_any_trial_naming_the_key(tmp_path, monkeypatch):
    """`bertops tune` exits 1 with the key named, and starts nothing (no Ray, no search folder)."""
    from typer.testing import CliRunner

    from bertops.cli import app
    from tests.conftest import REPO

    monkeypatch.chdir(tmp_path)
    args = ["tune", "--params", str(REPO / "params.yaml"), "-s", "tune.space={finetune.dropout: {choice: [0.1, 1.5]}}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "finetune.dropout" in result.output, result.output
    assert not (tmp_path / "reports").exists()


def test_a_search_run_with_a_task_profile_writes_a_profile_for_that_task(tmp_path):
    """One --profile can be passed: the tuned profile of an RTE search must still be an RTE run."""
    from bertops.config import load_config
    from bertops.tuning import summarise
    from tests.conftest import REPO

    base = tmp_path / "rte-search.yaml"
    base.write_text((REPO / "configs" / "rte.yaml").read_text() + "tune:\n  num_samples: 2\n")
    cfg = load_config(REPO / "params.yaml", base)
    search = tmp_path / "reports" / "tune" / "rte"
    search.mkdir(parents=True)
    trials = [
        record("c_00000", cfg.finetune.lr, cfg.finetune.epochs, "completed", [0.60]),
        record("c_00001", 2e-5, 2, "completed", [0.58, 0.62]),
    ]
    summary = summarise(cfg, tmp_path, search, trials, base)
    tuned = load_config(REPO / "params.yaml", Path(summary.profile))
    assert tuned.ingest.dataset == "rte" and tuned.finetune.pooling == "siamese"  # the task's keys
    assert (tuned.finetune.lr, tuned.finetune.epochs) == (2e-5, 2)  # the tuned ones over them
    assert tuned.finetune.batch_size == cfg.finetune.batch_size  # untuned profile keys kept
    assert tuned.tune.num_samples == load_config(REPO / "params.yaml").tune.num_samples  # the search's own: not
    assert str(base) in Path(summary.profile).read_text()


def _asha(rungs: str, full_defaults_trial: bool = True):
    from bertops.tuning import METRIC, scheduler_for

    cfg = with_space(
        {"finetune.lr": {"loguniform": [1e-5, 1e-3]}},
        scheduler="asha",
        rungs=rungs,
        grace_period=0.25 if rungs == "schedule" else 1,
        reduction_factor=2,
        full_defaults_trial=full_defaults_trial,
    )
    scheduler = scheduler_for(cfg.tune, defaults_point(cfg))
    scheduler.set_search_properties(METRIC, "max")
    return cfg, scheduler


def _trial(scheduler, trial_id: str, config: dict):
    from types import SimpleNamespace

    trial = SimpleNamespace(trial_id=trial_id, config=config)
    scheduler.on_trial_add(None, trial)
    return trial


def _report(scheduler, trial, score: float, evaluation: int, share: float) -> str:
    from bertops.tuning import METRIC, SHARE

    return scheduler.on_trial_result(None, trial, {"training_iteration": evaluation, SHARE: share, METRIC: score})


@pytest.mark.parametrize("rungs", ["schedule", "evaluations"])
@pytest.mark.parametrize("full_defaults_trial", [True, False])
def test_asha_judges_others_by_the_defaults_but_stops_the_defaults_only_when_told(full_defaults_trial, rungs):
    """Rung 1 (reduction 2) keeps the better half: the defaults' trial, below the leader there, is
    stopped by plain ASHA and runs on with `tune.full_defaults_trial`; either way its score is
    recorded at the rung and sets the bar for the next trial."""
    from ray.tune.schedulers import TrialScheduler

    cfg, scheduler = _asha(rungs, full_defaults_trial)
    leader = _trial(scheduler, "a", {"finetune.lr": 3e-4})
    defaults = _trial(scheduler, "b", defaults_point(cfg))
    trailer = _trial(scheduler, "c", {"finetune.lr": 2e-5})
    # the first evaluation, a quarter of the way through: the first rung in either unit
    assert _report(scheduler, leader, 0.80, 1, 0.25) == TrialScheduler.CONTINUE
    expected = TrialScheduler.CONTINUE if full_defaults_trial else TrialScheduler.STOP
    assert _report(scheduler, defaults, 0.70, 1, 0.25) == expected
    # the bar is the median of the rung's scores, (0.80, 0.70) -> 0.75: 0.77 clears it only because
    # the defaults' 0.70 was recorded (the leader's 0.80 alone would stop it)
    assert _report(scheduler, trailer, 0.77, 1, 0.25) == TrialScheduler.CONTINUE
    assert scheduler._num_stopped == (0 if full_defaults_trial else 1)
    assert defaults_point(cfg) == {"finetune.lr": cfg.finetune.lr}


def test_schedule_rungs_judge_a_longer_trial_at_the_same_point_of_its_own_schedule():
    """A 4-epoch trial's first evaluation comes an eighth of the way through its schedule, a 2-epoch
    trial's a quarter: counted in evaluations both reach rung 1 together and the long one (its
    learning rate barely decayed) is stopped; counted in shares it is judged only when it, too, is a
    quarter of the way through."""
    from ray.tune.schedulers import TrialScheduler

    for rungs, first_verdict in (("evaluations", TrialScheduler.STOP), ("schedule", TrialScheduler.CONTINUE)):
        _, scheduler = _asha(rungs, full_defaults_trial=False)
        short = _trial(scheduler, "a", {"finetune.lr": 1e-4, "finetune.epochs": 2})
        long = _trial(scheduler, "b", {"finetune.lr": 1e-4, "finetune.epochs": 4})
        assert _report(scheduler, short, 0.85, 1, 0.25) == TrialScheduler.CONTINUE
        assert _report(scheduler, long, 0.80, 1, 0.125) == first_verdict, rungs
    # by shares, the long trial meets the rung at its second evaluation, with the score it has by then
    assert _report(scheduler, long, 0.88, 2, 0.25) == TrialScheduler.CONTINUE
    assert _report(scheduler, short, 0.86, 2, 0.5) == TrialScheduler.CONTINUE


@pytest.mark.parametrize("rungs", ["schedule", "evaluations"])
def test_asha_never_stops_a_trial_at_its_last_evaluation(rungs):
    """At a trial's last evaluation its run is done: stopping it would save nothing and cut off the
    loop's wrap-up (its metrics, the status the reports give it); its score still counts at the rung."""
    from ray.tune.schedulers import TrialScheduler

    _, scheduler = _asha(rungs, full_defaults_trial=False)
    leader = _trial(scheduler, "a", {"finetune.lr": 3e-4})
    trailer = _trial(scheduler, "b", {"finetune.lr": 2e-5})
    third = _trial(scheduler, "c", {"finetune.lr": 5e-5})
    assert _report(scheduler, leader, 0.90, 1, 1.0) == TrialScheduler.CONTINUE
    assert _report(scheduler, trailer, 0.50, 1, 1.0) == TrialScheduler.CONTINUE  # below 0.90, but done: runs to its end
    if rungs == "schedule":  # every last evaluation meets the rung at 1.0: none is stopped there
        assert _report(scheduler, third, 0.60, 1, 1.0) == TrialScheduler.CONTINUE
        assert scheduler._num_stopped == 0
    else:  # a trial still running at the same rung is judged against both scores: 0.60 < median 0.70
        assert _report(scheduler, third, 0.60, 1, 0.5) == TrialScheduler.STOP
        assert scheduler._num_stopped == 1


def test_grace_period_is_checked_against_the_rungs_unit():
    with pytest.raises(ConfigError, match=r"tune.grace_period=1.0 with tune.rungs=schedule .* below 1"):
        with_space({"finetune.lr": {"loguniform": [1e-5, 1e-3]}}, rungs="schedule", grace_period=1)
    with pytest.raises(ConfigError, match=r"tune.grace_period=0.5 with tune.rungs=evaluations .* whole number"):
        with_space({"finetune.lr": {"loguniform": [1e-5, 1e-3]}}, rungs="evaluations", grace_period=0.5)
    # fifo stops no trial, so its grace period means nothing and is not checked
    assert with_space({"finetune.lr": {"loguniform": [1e-5, 1e-3]}}, scheduler="fifo", grace_period=1).tune.grace_period


def test_a_search_saved_before_rungs_existed_resumes_with_evaluation_rungs(tmp_path):
    """Its pickled scheduler counts evaluations, and its saved config (grace_period 1, no `rungs`) would be
    refused under today's default unit: it resumes as it began."""
    from bertops.tuning import saved_search

    old = smoke_config().to_dict()
    del old["tune"]["rungs"]
    old["tune"]["grace_period"] = 1
    (tmp_path / "search.json").write_text(json.dumps({"config": old, "profile": None}))
    config, profile = saved_search(tmp_path)
    assert (config.tune.rungs, config.tune.grace_period, profile) == ("evaluations", 1, None)

    new = smoke_config().to_dict()  # a search saved today keeps what it says
    (tmp_path / "search.json").write_text(json.dumps({"config": new, "profile": "configs/rte.yaml"}))
    config, profile = saved_search(tmp_path)
    assert config.tune.rungs == new["tune"]["rungs"] and profile == Path("configs/rte.yaml")
