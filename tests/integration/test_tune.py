"""A real Ray Tune search on a tiny prepared SST-2 corpus: ASHA, a crashing trial, the reports and the
profile, resources refused up front, and Ctrl-C then --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bertops.config import config_from_dict, load_config
from bertops.errors import ConfigError
from bertops.tuning import COMPLETED, ELAPSED, ERROR, SHARE, STOPPED, defaults_point, full_run_evaluations, tune
from tests.conftest import REPO, scratch_dir, smoke_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 160 rows: 128 train + 32 validation; 16 a batch = 8 steps an epoch, scored every 2 steps (4 rungs an epoch).
TINY = ["prepare.max_train_rows=160", "prepare.max_eval_rows=40", "finetune.eval_every=2"]


def search_config(space: dict, overrides: list[str] = (), **tune_settings):
    tree = smoke_config(TINY + list(overrides)).to_dict()
    tree["tune"].update(space=space, **tune_settings)
    return config_from_dict(tree)


def train_rows(root: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(root / "data" / "prepared" / "sst2" / "train.parquet").num_rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, request) -> Iterator[Path]:
    """ingest -> validate -> prepare on the tiny profile (no finetune: the trials train)."""
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate

    with scratch_dir(tmp_path_factory, request, "tune-workspace") as root:
        cfg = smoke_config(TINY)
        ingest(cfg, root)
        validate(cfg, root)
        prepare(cfg, root)
        yield root


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (or the session's, when another module already started one)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


RUN_SEARCH = """
import json, sys
from pathlib import Path
from bertops.config import config_from_dict
from bertops.tuning import TuneInterrupted, tune
try:
    tune(config_from_dict(json.loads(sys.argv[1])), Path(sys.argv[2]))
except TuneInterrupted as exc:
    print("INTERRUPTED:", exc, flush=True)
    sys.exit(3)
"""


def test_ctrl_c_keeps_finished_trials_and_resume_completes_the_search(workspace: Path, request):
    """Ctrl-C with one trial done and the next one part-way (its loop checkpointed); --resume keeps
    the first as it was and lets the second go on from its own checkpoint, reporting each evaluation once."""
    cfg = search_config(
        {"finetune.lr": {"loguniform": [5e-5, 3e-4]}},
        num_samples=2,
        max_concurrent=1,
        cpus_per_trial=1,
        scheduler="fifo",
        name="interrupted",
        overrides=["finetune.checkpoint_every=8"],
    )
    search = workspace / "reports" / "tune" / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_SEARCH, json.dumps(cfg.to_dict()), str(workspace)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    finished = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("tune: trial ") and " completed:" in line:
                finished.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert finished.wait(240), "no trial finished in time:\n" + "".join(output[-40:])
    first = next(line.split()[2] for line in output if " completed:" in line)
    deadline = time.monotonic() + 120
    while not (
        part_way := [p for p in search.glob("trials/*/models/.checkpoints/sst2/state.pt") if p.parts[-5] != first]
    ):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(output[-40:])
        time.sleep(0.2)
    second = part_way[0].parts[-5]
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C, once
    assert proc.wait(120) == 3, "".join(output[-40:])
    reader.join(10)
    assert any(line.startswith("INTERRUPTED:") and "--resume" in line for line in output)
    marker = search / "trials" / first / "reports" / "finetune" / "metrics.json"
    before = marker.stat().st_mtime_ns
    assert not (search / "results.json").exists() and not (search / "trials" / second / "reports").exists()

    request.getfixturevalue("ray_local")
    summary = tune(cfg, workspace, resume=True)

    results = json.loads((search / "results.json").read_text())
    assert [t["trial_id"] for t in results["trials"]] == [first, second] == [t.trial_id for t in summary.trials]
    assert {t["status"] for t in results["trials"]} == {COMPLETED}
    assert marker.stat().st_mtime_ns == before  # the finished trial was kept, not trained again
    loop = json.loads((search / "trials" / second / "reports" / "finetune" / "metrics.json").read_text())
    assert loop["resumed_from_step"] == 8  # the interrupted trial went on from its own checkpoint (step 8 of 16)
    full = full_run_evaluations(cfg.finetune, train_rows(workspace), evaluate_start=False)
    for trial in summary.trials:
        assert trial.evaluations == full == 8
        assert [r["step"] for r in trial.validation] == list(range(2, 17, 2))  # each evaluation reported once
        assert [r[SHARE] for r in trial.validation] == [step / 16 for step in range(2, 17, 2)]  # of its 16 steps
    assert summary.trials[0].defaults and not summary.trials[1].defaults


def test_a_search_with_asha_a_crashing_trial_reports_and_profile(workspace: Path, ray_local, capsys):
    missing = workspace / "no-such-model"
    cfg = search_config(
        {
            "finetune.lr": {"loguniform": [5e-5, 3e-4]},
            "finetune.epochs": {"choice": [1, 2]},
            "finetune.model": {"choice": ["packaged", str(missing)]},
        },
        num_samples=4,
        max_concurrent=2,
        cpus_per_trial=1,
        scheduler="asha",
        rungs="schedule",  # judged a quarter, half and all the way through each trial's own schedule
        grace_period=0.25,
        reduction_factor=2,
        seed=3,
    )
    summary = tune(cfg, workspace)
    search = workspace / "reports" / "tune" / "sst2"
    assert summary.search == str(search)
    assert len(summary.trials) == 4

    # the first trial is the config's current values, the baseline of the gain
    defaults = [t for t in summary.trials if t.defaults]
    assert len(defaults) == 1 and defaults[0].params == defaults_point(cfg)
    assert defaults[0].trial_id == min(t.trial_id for t in summary.trials)
    assert defaults[0].params == {"finetune.lr": 1e-4, "finetune.epochs": 2, "finetune.model": "packaged"}
    assert summary.defaults_score == defaults[0].best_validation_accuracy is not None
    assert defaults[0].status == COMPLETED  # tune.full_defaults_trial: ASHA never cuts the baseline short

    # a trial that crashes is recorded with its error; the others finish
    crashed = [t for t in summary.trials if t.params["finetune.model"] == str(missing)]
    assert crashed, "seed 3 is meant to sample the missing model at least once"
    for trial in crashed:
        assert trial.status == ERROR and str(missing) in trial.error and "tokenizer" in trial.error
    healthy = [t for t in summary.trials if t not in crashed]
    assert healthy and all(t.status in (COMPLETED, STOPPED) for t in healthy)
    assert summary.failed == len(crashed)
    assert summary.early_stopped == sum(t.status == STOPPED for t in summary.trials)
    stopped = [t for t in summary.trials if t.status == STOPPED]
    assert all(0 < t.validation[-1][SHARE] < 1 for t in stopped)  # ASHA never stops a trial at its end
    assert all(ELAPSED in r for t in healthy for r in t.validation)  # the loop's clock: set-up left out of the pace
    assert (summary.minutes_saved > 0) == bool(stopped)

    # every score is the loop's own validation score: what it reported is what it wrote
    for trial in healthy:
        assert trial.best_validation_accuracy == max(r["validation_accuracy"] for r in trial.validation)
        setting = cfg.finetune.model_copy(update={"epochs": trial.params["finetune.epochs"]})
        full = full_run_evaluations(setting, train_rows(workspace), evaluate_start=False)
        reports = search / "trials" / trial.trial_id / "reports" / "finetune"
        if trial.status == COMPLETED:
            loop = json.loads((reports / "metrics.json").read_text())
            assert trial.best_validation_accuracy == loop["best_validation_accuracy"]
            written = (reports / "validation.csv").read_text().splitlines()[1:]
            assert [(int(s), float(v)) for s, v in (line.split(",") for line in written)] == [
                (r["step"], r["validation_accuracy"]) for r in trial.validation
            ]
            assert trial.evaluations == full
        else:
            assert trial.evaluations < full and not (reports / "metrics.json").exists()
    assert summary.best_score == max(t.best_validation_accuracy for t in healthy)
    assert summary.gain == pytest.approx(summary.best_score - summary.defaults_score, abs=1e-4)

    # the reports
    results = json.loads((search / "results.json").read_text())
    assert [t["trial_id"] for t in results["trials"]] == [t.trial_id for t in summary.trials]
    assert {t["trial_id"]: t["status"] for t in results["trials"]} == {t.trial_id: t.status for t in summary.trials}
    assert all(t["error"] for t in results["trials"] if t["status"] == ERROR)
    md = (search / "results.md").read_text()
    assert f"4 trials, {summary.early_stopped} stopped early by ASHA, {len(crashed)} failed" in md
    assert "(defaults)" in md and "trial-minutes saved by early stopping" in md and "eval split was not used" in md
    best_row = next(line for line in md.splitlines() if line.startswith("| ") and summary.best_trial in line)
    first_row = [line for line in md.splitlines() if line.startswith("| ")][2]
    assert best_row == first_row  # sorted by score
    assert (search / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert sum(line.startswith("tune: trial ") for line in printed.splitlines()) == 4

    # the profile: the best setting over params.yaml
    profile = workspace / "configs" / "tuned-sst2.yaml"
    assert summary.profile == str(profile)
    text = profile.read_text()
    assert "the eval split was not used" in text and f"{summary.best_score:.4f}" in text
    tuned = load_config(REPO / "params.yaml", profile)
    assert tuned.finetune.lr == summary.best_params["finetune.lr"]
    assert tuned.finetune.epochs == summary.best_params["finetune.epochs"]
    assert tuned.finetune.model == "packaged"


def test_more_concurrency_than_the_cluster_has_is_refused_before_any_trial(workspace: Path, ray_local):
    cpus = int(ray_local.cluster_resources()["CPU"])
    cfg = search_config(
        {"finetune.lr": {"loguniform": [5e-5, 3e-4]}},
        num_samples=cpus + 2,
        max_concurrent=cpus + 1,
        cpus_per_trial=1,
        name="too-wide",
    )
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        tune(cfg, workspace)
    message = str(caught.value)
    assert f"tune.max_concurrent={cpus + 1}" in message and f"= {cpus + 1} CPUs" in message
    assert f"the Ray cluster has {cpus} CPUs" in message
    assert not (workspace / "reports" / "tune" / "too-wide").exists()
    assert time.monotonic() - started < 30


def test_resume_without_a_saved_search_says_where_it_looked(workspace: Path):
    cfg = search_config({"finetune.lr": {"loguniform": [5e-5, 3e-4]}}, name="never-started")
    with pytest.raises(ConfigError) as caught:
        tune(cfg, workspace, resume=True)
    assert "no search to resume" in str(caught.value)
    assert str(workspace.resolve() / "reports" / "tune" / "never-started") in str(caught.value)
