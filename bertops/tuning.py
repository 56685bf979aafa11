"""`tune`: a hyperparameter search over finetune's settings on Ray Tune (ASHA early stopping).

Each trial is the finetune stage's own loop in its own folder, scored on the validation slice
prepare carved from train (never the eval split); the current defaults run as the first trial so
the gain is measured against them. The best setting becomes a profile, configs/tuned-<dataset>.yaml.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertops.config import Config, FinetuneConfig, TuneConfig, config_from_dict
from bertops.errors import BertopsError, ConfigError

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
# Set by the search for every trial (from tune.cpus_per_trial / gpus_per_trial), so not tunable.
SET_BY_SEARCH = ("device", "num_threads", "num_workers", "progress")
METRIC = "validation_accuracy"  # what the loop reports for every validation evaluation (higher is better)
COMPLETED, STOPPED, ERROR = "completed", "stopped early", "error"
# ASHA's max_t, in evaluations: far beyond any real run, so ASHA never ends a trial for its length.
MAX_EVALUATIONS = 100_000
ELAPSED = "elapsed_s"  # reported with every evaluation: the loop's clock (it starts after set-up; 0 again on resume)
SHARE = "schedule_share"  # reported with every evaluation: step / the trial's total steps (tune.rungs: schedule)


class TuneInterrupted(BertopsError):
    """The search was stopped (Ctrl-C) before every trial ended; its state is saved for --resume."""


@dataclass
class TrialRecord:
    """One trial as the reports show it."""

    trial_id: str
    params: dict[str, Any]  # dotted finetune key -> the value this trial trained with
    status: str  # completed | stopped early | error
    evaluations: int  # validation evaluations reported
    best_validation_accuracy: float | None
    minutes: float
    error: str | None = None  # the last line of the exception
    defaults: bool = False  # the trial of the config's current values
    # [{step, validation_accuracy, schedule_share, elapsed_s}] as reported (elapsed_s: the loop's clock)
    validation: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TuneSummary:
    """What a search found and where it wrote it."""

    search: str  # the search folder
    trials: list[TrialRecord]
    best_trial: str | None
    best_params: dict[str, Any]
    best_score: float | None
    defaults_score: float | None
    gain: float | None  # best_score - defaults_score, both on the validation slice
    early_stopped: int
    failed: int
    trial_minutes: float
    minutes_saved: float  # estimate: the schedule ASHA spared each stopped trial, at that trial's own pace
    profile: str | None
    results_json: str
    results_md: str
    plot: str


# -- the search space -------------------------------------------------------------------------------


def tunable_keys() -> list[str]:
    return [f"finetune.{name}" for name in FinetuneConfig.model_fields if name not in SET_BY_SEARCH]


def _field(key: str) -> str:
    """`finetune.lr` -> `lr`, or a ConfigError naming the key and what can be tuned."""
    section, _, name = key.partition(".")
    if section == "finetune" and name in SET_BY_SEARCH:
        raise ConfigError(
            f"tune.space: {key} is set by the search itself (from tune.cpus_per_trial and tune.gpus_per_trial); "
            "remove it from tune.space"
        )
    if section != "finetune" or name not in FinetuneConfig.model_fields:
        raise ConfigError(
            f"tune.space: unknown key {key!r}; the keys that can be tuned are finetune's: {', '.join(tunable_keys())}"
        )
    return name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_range(key: str, dist: str, values: list[Any], annotation: Any) -> None:
    if len(values) != 2 or not all(_is_number(v) for v in values):
        raise ConfigError(f"tune.space: {key}: {dist} needs exactly two numbers [low, high], got {values!r}")
    low, high = values
    if low >= high:
        raise ConfigError(f"tune.space: {key}: {dist} range [{low}, {high}] is empty; low must be below high")
    if dist == "loguniform" and low <= 0:
        raise ConfigError(f"tune.space: {key}: loguniform needs low > 0 (it draws log-evenly), got {low}")
    if dist == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"tune.space: {key}: randint needs two integers [low, high] (high excluded), got {values!r}")
    if annotation not in (int, float):
        raise ConfigError(
            f"tune.space: {key} does not take numbers from a range; list its values with {{choice: [...]}} "
            f"instead of {dist}"
        )
    if annotation is int and dist != "randint":
        raise ConfigError(
            f"tune.space: {key} is an integer but {dist} draws real numbers; use "
            f"{{randint: [{math.ceil(low)}, {math.floor(high) + 1}]}} (high excluded) or {{choice: [...]}}"
        )


def _checked_space(config: Config) -> dict[str, tuple[str, list[Any]]]:
    """tune.space as {key: (distribution, values)}, every value checked against the config schema."""
    tree = config.to_dict()
    checked = {}
    for key, spec in config.tune.space.items():
        name = _field(key)
        if len(spec) != 1:
            raise ConfigError(
                f"tune.space: {key} needs exactly one distribution, e.g. {{loguniform: [2.0e-5, 2.0e-4]}}; "
                f"got {sorted(spec) or 'none'}"
            )
        [(dist, values)] = spec.items()
        if dist not in DISTRIBUTIONS:
            raise ConfigError(
                f"tune.space: {key}: unknown distribution {dist!r}; use one of {', '.join(DISTRIBUTIONS)}"
            )
        if dist == "choice":
            if not values:
                raise ConfigError(f"tune.space: {key}: the choice list is empty; give at least one value")
            candidates = list(values)
        else:
            _check_range(key, dist, values, FinetuneConfig.model_fields[name].annotation)
            # randint excludes high: its largest draw is high - 1
            candidates = [values[0], values[1] - 1 if dist == "randint" else values[1]]
        for value in candidates:
            trial = copy.deepcopy(tree)
            trial["finetune"][name] = value
            try:
                config_from_dict(trial, source="tune.space")
            except ConfigError as exc:
                reason = "; ".join(line.strip() for line in str(exc).splitlines()[1:])
                raise ConfigError(f"tune.space: {key}: {dist} value {value!r} is not valid: {reason}") from None
        checked[key] = (dist, list(values))
    if not checked:
        raise ConfigError("tune.space is empty; give at least one finetune key to search, e.g. finetune.lr")
    return checked


def validate_space(config: Config) -> dict[str, Any]:
    """tune.space as Ray Tune sampling objects; a ConfigError naming the key before any trial starts."""
    checked = _checked_space(config)
    from ray import tune as ray_tune

    build = {
        "loguniform": ray_tune.loguniform,
        "uniform": ray_tune.uniform,
        "randint": ray_tune.randint,
    }
    return {
        key: ray_tune.choice(values) if dist == "choice" else build[dist](*values)
        for key, (dist, values) in checked.items()
    }


def defaults_point(config: Config) -> dict[str, Any]:
    """The config's current values of the space's keys: the first trial, the baseline of the gain."""
    return {key: getattr(config.finetune, _field(key)) for key in config.tune.space}


def is_defaults(params: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether a trial's sampled values are the defaults' point (the search's and the scheduler's test)."""
    return all(params.get(key) == value for key, value in defaults.items())


def cast_value(key: str, value: Any) -> Any:
    """A sampled value (a numpy scalar from Ray's samplers) as the schema's plain type: randint -> int,
    a float field's draw -> float; choices as given."""
    value = value.item() if hasattr(value, "item") else value
    annotation = FinetuneConfig.model_fields[_field(key)].annotation
    if annotation is int and _is_number(value):
        return int(value)
    if annotation is float and _is_number(value):
        return float(value)
    return value


def cast_params(params: dict[str, Any]) -> dict[str, Any]:
    """{dotted key: sampled value} -> {finetune field: value of the schema's type}."""
    return {_field(key): cast_value(key, value) for key, value in params.items()}


# -- one trial (runs in a Ray actor) -----------------------------------------------------------------


def _trial_config(tree: dict[str, Any], params: dict[str, Any], folder: Path, setup: dict[str, Any]) -> Config:
    """The search's config with this trial's values, its own output folders and the trial's share
    of the machine."""
    tree = copy.deepcopy(tree)
    tree["finetune"].update(cast_params(params))
    tree["finetune"].update(
        progress=False,
        num_workers=0,
        num_threads=max(1, int(setup["cpus"])),
        device="cuda" if setup["gpus"] > 0 else "cpu",
    )
    tree["paths"].update(models=str(folder / "models"), reports=str(folder / "reports"), prepared=setup["prepared"])
    return config_from_dict(tree, source=f"trial {folder.name}")


def _run_trial(params: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial: the finetune loop, each validation evaluation reported to the scheduler (which may
    stop the trial there). The reported rows travel in a small Tune checkpoint, so a resumed trial
    goes on counting where it was instead of reporting its evaluations twice."""
    import tempfile

    from ray import tune as ray_tune

    from bertops.tasks import get_task
    from bertops.training.loop import train_loop

    root = Path(setup["root"])
    os.chdir(root)  # Ray starts trials in their own folder; relative paths (finetune.model) mean the workspace
    trial_id = ray_tune.get_context().get_trial_id()
    folder = Path(setup["search"]) / "trials" / trial_id
    config = _trial_config(setup["config"], params, folder, setup)
    reported: list[dict[str, Any]] = []
    saved = ray_tune.get_checkpoint()
    if saved is not None:
        with saved.as_directory() as directory:
            reported = json.loads(Path(directory, "validation.json").read_text())
    resumed_at = reported[-1]["step"] if reported else -1

    def report(row: dict[str, Any]) -> None:
        if row["step"] <= resumed_at:
            return  # reported before the search was interrupted
        reported.append({"step": row["step"], METRIC: row[METRIC]})
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "validation.json").write_text(json.dumps(reported))
            ray_tune.report(
                {
                    METRIC: row[METRIC],
                    "step": row["step"],
                    "epoch": row["epoch"],
                    SHARE: row["share"],
                    ELAPSED: row["elapsed_s"],
                },
                checkpoint=ray_tune.Checkpoint.from_directory(directory),
            )

    train_loop(config, root, get_task(config.ingest.task).training_spec(config, root), on_evaluate=report)
    # Scores are what a search keeps: `bertops run --profile` retrains the chosen setting.
    shutil.rmtree(folder / "models" / config.ingest.dataset, ignore_errors=True)


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _finished_marker(search: Path, trial_id: str) -> Path:
    """What the loop writes only when it ran to its end (an early-stopped trial never gets there)."""
    return search / "trials" / trial_id / "reports" / "finetune" / "metrics.json"


def _progress_lines(search: Path) -> Any:
    """A Ray Tune callback printing one line per finished trial."""
    from ray import tune as ray_tune

    class TrialLines(ray_tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            status = COMPLETED if _finished_marker(search, trial.trial_id).is_file() else STOPPED
            score = trial.metric_analysis.get(METRIC, {}).get("max")
            result = trial.last_result or {}
            shown = f"{score:.4f}" if score is not None else "-"
            print(
                f"tune: trial {trial.trial_id} {status}: best {METRIC} {shown} after "
                f"{result.get('training_iteration', 0)} evaluations, {result.get('time_total_s', 0) / 60:.1f} min",
                flush=True,
            )

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            # Ray has just written the error to the trial's local folder (storage gets it later).
            path = Path(trial.error_file) if trial.error_file else None
            error = path.read_text() if path is not None and path.is_file() else None
            print(f"tune: trial {trial.trial_id} failed: {_last_line(error)}", flush=True)

    return TrialLines()


def _last_line(error: BaseException | str | None) -> str:
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


# -- the search ------------------------------------------------------------------------------------------


def scheduler_for(cfg: TuneConfig, defaults: dict[str, Any]) -> Any:
    """FIFO, or ASHA on the validation evaluations, its clock set by `tune.rungs`: the share of each
    trial's own schedule done (default), or the evaluations made. Two trials are never stopped:
    one at its last evaluation (it has finished: stopping it saves nothing and would lose its
    result), and, with `tune.full_defaults_trial`, the defaults' trial, whose scores are still
    recorded at every rung as the bar the others must clear (a search whose defaults were cut after
    one evaluation would measure its gain against a truncated run)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    if cfg.scheduler == "fifo":
        return FIFOScheduler()

    class BertopsASHA(ASHAScheduler):
        def __init__(self, defaults: dict[str, Any] | None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.defaults = None if defaults is None else dict(defaults)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            finished = result.get(SHARE, 0.0) >= 1.0
            protected = self.defaults is not None and is_defaults(trial.config, self.defaults)
            if action == TrialScheduler.STOP and (finished or protected):
                self._num_stopped -= 1
                return TrialScheduler.CONTINUE
            return action

    by_share = cfg.rungs == "schedule"
    return BertopsASHA(
        dict(defaults) if cfg.full_defaults_trial else None,
        time_attr=SHARE if by_share else "training_iteration",
        # the schedule ends at 1.0; just past it, so ASHA's own length limit never fires on a last evaluation
        max_t=1.0 + 1e-9 if by_share else MAX_EVALUATIONS,
        grace_period=cfg.grace_period if by_share else int(cfg.grace_period),
        reduction_factor=cfg.reduction_factor,
    )


def search_folder(config: Config, root: Path = Path(".")) -> Path:
    return (root / config.paths.reports / "tune" / (config.tune.name or config.ingest.dataset)).resolve()


def _check_resources(config: Config) -> None:
    """Ray would wait forever for resources the cluster does not have: say so instead."""
    import ray

    cfg = config.tune
    at_once = min(cfg.max_concurrent, cfg.num_samples)
    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    need_cpus, need_gpus = at_once * cfg.cpus_per_trial, at_once * cfg.gpus_per_trial
    problems = []
    if need_cpus > cpus:
        problems.append(f"{at_once} trials at once x tune.cpus_per_trial={cfg.cpus_per_trial:g} = {need_cpus:g} CPUs")
    if need_gpus > gpus:
        problems.append(f"{at_once} trials at once x tune.gpus_per_trial={cfg.gpus_per_trial:g} = {need_gpus:g} GPUs")
    if not problems and cfg.cpus_per_trial > largest:
        problems.append(f"tune.cpus_per_trial={cfg.cpus_per_trial:g} CPUs on one node (the largest has {largest:g})")
    if problems:
        raise ConfigError(
            f"tune.max_concurrent={cfg.max_concurrent} needs {' and '.join(problems)}; the Ray cluster has "
            f"{cpus:g} CPUs and {gpus:g} GPUs. Lower tune.max_concurrent or the per-trial resources, or run on a "
            "larger cluster (RAY_ADDRESS)."
        )


def saved_search(search: Path) -> tuple[Config, Path | None]:
    """The config and profile a saved search started with (`search.json`), to resume it as it began.
    A search saved before `tune.rungs` existed counted its rungs in evaluations (its pickled scheduler
    still does), so its config says so, not today's default."""
    saved = json.loads((search / "search.json").read_text())
    tree = saved["config"]
    tree.get("tune", {}).setdefault("rungs", "evaluations")
    return config_from_dict(tree, source=str(search)), Path(saved["profile"]) if saved.get("profile") else None


def tune(config: Config, root: Path = Path("."), resume: bool = False, profile: Path | None = None) -> TuneSummary:
    """Search tune.space with Ray Tune, write the reports and the best setting as a profile (over
    `profile`, the profile `config` was read with, when there was one).

    With `resume`, continue the search saved in the search folder (after Ctrl-C): finished trials are
    kept, unfinished ones go on, with the config (and profile) the search started with."""
    import ray
    from ray import tune as ray_tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from bertops.training.ray_adapter import connect

    root = root.resolve()
    search = search_folder(config, root)
    if resume:
        if not ray_tune.Tuner.can_restore(str(search)) or not (search / "search.json").is_file():
            raise ConfigError(
                f"there is no search to resume: {search} holds no saved search state; "
                "start one with `bertops tune` (without --resume)"
            )
        config, profile = saved_search(search)
    space = validate_space(config)
    prepared = (root / config.paths.prepared / config.ingest.dataset).resolve()
    if not (prepared / "meta.json").is_file():
        raise FileNotFoundError(f"{prepared} holds no prepared corpus; run `bertops prepare` first")
    cfg = config.tune
    setup = {
        "config": config.to_dict(),
        "root": str(root),
        "search": str(search),
        "prepared": str(prepared.parent),
        "cpus": cfg.cpus_per_trial,
        "gpus": cfg.gpus_per_trial,
    }

    started_here = not ray.is_initialized()
    if started_here:
        connect()
    try:
        _check_resources(config)
        trainable = ray_tune.with_resources(
            ray_tune.with_parameters(_run_trial, setup=setup), {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
        )
        if resume:
            print(f"tune: resuming the search in {search}", flush=True)
            tuner = ray_tune.Tuner.restore(
                str(search), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
            )
        else:
            if search.exists():
                print(f"tune: replacing the earlier search in {search} (--resume would have continued it)", flush=True)
                shutil.rmtree(search)
            search.mkdir(parents=True)
            state = {"config": setup["config"], "profile": str(profile.resolve()) if profile else None}
            (search / "search.json").write_text(json.dumps(state, indent=2) + "\n")
            scheduler = scheduler_for(cfg, defaults_point(config))
            tuner = ray_tune.Tuner(
                trainable,
                param_space=space,
                tune_config=ray_tune.TuneConfig(
                    metric=METRIC,
                    mode="max",
                    scheduler=scheduler,
                    # The generator limits concurrency itself (Tune ignores max_concurrent_trials for it).
                    search_alg=BasicVariantGenerator(
                        points_to_evaluate=[defaults_point(config)],
                        random_state=cfg.seed,
                        max_concurrent=cfg.max_concurrent,
                    ),
                    num_samples=cfg.num_samples,
                    trial_dirname_creator=_trial_dirname,
                ),
                run_config=ray_tune.RunConfig(
                    name=search.name,
                    storage_path=str(search.parent),
                    verbose=1,
                    callbacks=[_progress_lines(search)],
                    checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=1),
                    failure_config=ray_tune.FailureConfig(max_failures=0),
                ),
            )
        grid = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()

    # After Ctrl-C, Tune stops the running trials as if they had ended (and starts no more); the state
    # it saved first, which --resume continues from, still holds them as unfinished.
    saved = ray_tune.ExperimentAnalysis(str(search)).trials
    ended = sum(t.status in ("TERMINATED", "ERROR") for t in saved)
    if ended < cfg.num_samples:
        raise TuneInterrupted(
            f"the search stopped with {ended} of {cfg.num_samples} trials ended; its state is saved in {search}: "
            "`bertops tune --resume` continues it"
        )
    return summarise(config, root, search, [_record(config, search, grid[i]) for i in range(len(grid))], profile)


def _record(config: Config, search: Path, result: Any) -> TrialRecord:
    """A finished trial from Ray's result and the trial's own folder."""
    trial_id = Path(result.path).name
    frame = result.metrics_dataframe
    rows: list[dict[str, Any]] = []
    if frame is not None and METRIC in frame:
        frame = frame.dropna(subset=[METRIC]).drop_duplicates("step", keep="last").sort_values("step")
        for _, row in frame.iterrows():
            entry = {"step": int(row["step"]), METRIC: float(row[METRIC])}
            if SHARE in frame and row[SHARE] == row[SHARE]:  # not NaN: reported by this version's loop
                entry[SHARE] = float(row[SHARE])
            if ELAPSED in frame and row[ELAPSED] == row[ELAPSED]:
                entry[ELAPSED] = float(row[ELAPSED])
            rows.append(entry)
    if result.error is not None:
        status = ERROR
    elif _finished_marker(search, trial_id).is_file():
        status = COMPLETED
    else:
        status = STOPPED
    return TrialRecord(
        trial_id=trial_id,
        params={key: cast_value(key, result.config[key]) for key in config.tune.space},
        status=status,
        evaluations=len(rows),
        best_validation_accuracy=max((r[METRIC] for r in rows), default=None),
        minutes=round((result.metrics or {}).get("time_total_s", 0.0) / 60, 2),
        error=_last_line(result.error) if result.error is not None else None,
        validation=rows,
    )


def full_run_evaluations(cfg: FinetuneConfig, train_rows: int, evaluate_start: bool) -> int:
    """How many validation evaluations the loop makes in a whole run of this setting (one process):
    every `eval_every` steps, at each epoch end unless one just happened, and at step 0 if asked."""
    per_epoch = math.ceil(train_rows / cfg.batch_size)
    total = per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, per_epoch * cfg.epochs)
    count, step, last = int(evaluate_start), 0, 0 if evaluate_start else -1
    for _ in range(cfg.epochs):
        for _ in range(per_epoch):
            step += 1
            if cfg.eval_every and step % cfg.eval_every == 0:
                count, last = count + 1, step
            if step >= total:
                break
        if last != step:
            count, last = count + 1, step
        if step >= total:
            break
    return count


def remaining_minutes(trial: TrialRecord) -> float | None:
    """The minutes a stopped trial would still have trained: the share of its schedule left at its last
    evaluation x its pace, minutes per share of schedule. The pace is read on the loop's own clock,
    which starts after set-up (model load, data, a probe), so set-up is not multiplied up: between the
    first and last evaluations when there are two (a resumed trial: since it resumed), else from the
    loop's start. Without the loop's clock (an older search), from the trial's whole time. None when the
    trial did not report shares (a search begun before they were reported)."""
    rows = trial.validation
    if not rows or any(SHARE not in r for r in rows) or rows[-1][SHARE] <= 0:
        return None
    last, left = rows[-1], max(1.0 - rows[-1][SHARE], 0.0)
    if all(ELAPSED in r for r in rows):
        resumed = [i for i in range(1, len(rows)) if rows[i][ELAPSED] < rows[i - 1][ELAPSED]]
        first = rows[resumed[-1]] if resumed else rows[0]
        if last[SHARE] > first[SHARE]:
            return left * (last[ELAPSED] - first[ELAPSED]) / (last[SHARE] - first[SHARE]) / 60
        if not resumed:
            return left * last[ELAPSED] / last[SHARE] / 60
    return left * trial.minutes / last[SHARE]


def _minutes_saved(config: Config, root: Path, trials: list[TrialRecord]) -> float:
    """For each early-stopped trial, the minutes it would still have trained (`remaining_minutes`); for a
    trial without shares, (evaluations a full run would make - those made) x its minutes per evaluation."""
    import pyarrow.parquet as pq

    saved, train_rows = 0.0, None
    for trial in (t for t in trials if t.status == STOPPED and t.evaluations):
        remaining = remaining_minutes(trial)
        if remaining is None:
            if train_rows is None:
                train_parquet = root / config.paths.prepared / config.ingest.dataset / "train.parquet"
                train_rows = pq.read_metadata(train_parquet).num_rows
            setting = config.finetune.model_copy(update=cast_params(trial.params))
            full = full_run_evaluations(setting, train_rows, evaluate_start=trial.validation[0]["step"] == 0)
            remaining = max(full - trial.evaluations, 0) * trial.minutes / trial.evaluations
        saved += remaining
    return round(saved, 2)


def summarise(
    config: Config, root: Path, search: Path, trials: list[TrialRecord], base_profile: Path | None = None
) -> TuneSummary:
    """Pick the best trial, write results.json / results.md / trials.png and the profile."""
    trials.sort(key=lambda t: t.trial_id)
    baseline = defaults_point(config)
    for trial in trials:
        if is_defaults(trial.params, baseline):
            trial.defaults = True
            break
    scored = [t for t in trials if t.status != ERROR and t.best_validation_accuracy is not None]
    best = max(scored, key=lambda t: t.best_validation_accuracy or 0.0, default=None)
    defaults = next((t for t in trials if t.defaults), None)
    defaults_score = defaults.best_validation_accuracy if defaults else None
    best_score = best.best_validation_accuracy if best else None
    profile = None
    if best is not None:
        profile = _write_profile(config, root, search, best, len(trials), defaults_score, base_profile)
    summary = TuneSummary(
        search=str(search),
        trials=trials,
        best_trial=best.trial_id if best else None,
        best_params=dict(best.params) if best else {},
        best_score=best_score,
        defaults_score=defaults_score,
        gain=round(best_score - defaults_score, 4) if best_score is not None and defaults_score is not None else None,
        early_stopped=sum(t.status == STOPPED for t in trials),
        failed=sum(t.status == ERROR for t in trials),
        trial_minutes=round(sum(t.minutes for t in trials), 2),
        minutes_saved=_minutes_saved(config, root, trials),
        profile=str(profile) if profile else None,
        results_json=str(search / "results.json"),
        results_md=str(search / "results.md"),
        plot=str(search / "trials.png"),
    )
    Path(summary.results_json).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    Path(summary.results_md).write_text(markdown(summary))
    plot(trials, Path(summary.plot))
    if best is None:
        errors = "\n".join(f"  {t.trial_id}: {t.error}" for t in trials)
        raise BertopsError(
            f"every trial of the search failed (see {summary.results_md}), so nothing was chosen:\n{errors}"
        )
    return summary


def _write_profile(
    config: Config,
    root: Path,
    search: Path,
    best: TrialRecord,
    trials: int,
    defaults_score: float | None,
    base_profile: Path | None = None,
) -> Path:
    """The best setting as a profile over params.yaml: `bertops run --profile` trains and evaluates it.
    A search run with a profile (a task's, e.g. configs/rte.yaml) writes that profile's keys too, with
    the tuned ones over them: one profile can be passed, and the tuned setting belongs to that task.
    `-s` overrides of the search are not carried."""
    path = root / "configs" / f"tuned-{config.ingest.dataset}.yaml"
    shown = os.path.relpath(search, root)
    baseline = f"{defaults_score:.4f}" if defaults_score is not None else "failed"
    header = (
        f"# Written by `bertops tune`: the best of {trials} trials of the search {shown} (trial {best.trial_id}).\n"
        f"# {METRIC} {best.best_validation_accuracy:.4f} on the validation slice prepare carved from train (the\n"
        f"# defaults: {baseline}); the eval split was not used. Train, evaluate and record it:\n"
        f"#   bertops run --profile {os.path.relpath(path, root)}\n"
    )
    tree: dict[str, Any] = {}
    if base_profile is not None:
        tree = yaml.safe_load(base_profile.read_text()) or {}
        tree.pop("tune", None)  # the search's own settings, not the run's
        header += f"# Over the keys of {base_profile}, the profile the search ran with (copied here).\n"
    tree.setdefault("finetune", {}).update(cast_params(best.params))
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(tree, sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + body)
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def markdown(summary: TuneSummary) -> str:
    """The search as a results table (best first) and what early stopping saved."""
    keys = list(summary.trials[0].params) if summary.trials else []
    lines = [
        f"# Hyperparameter search `{Path(summary.search).name}`",
        "",
        f"{len(summary.trials)} trials, {summary.early_stopped} stopped early by ASHA, {summary.failed} failed. "
        f"Scored by {METRIC} on the validation slice prepare carved from train; the eval split was not used.",
        "",
        "| trial | status | " + " | ".join([METRIC, "evaluations", "minutes", *keys, "error"]) + " |",
        "|" + " --- |" * (len(keys) + 6),
    ]
    ranked = sorted(
        summary.trials, key=lambda t: (t.best_validation_accuracy is None, -(t.best_validation_accuracy or 0))
    )
    for t in ranked:
        name = f"{t.trial_id} (defaults)" if t.defaults else t.trial_id
        cells = [name, t.status, _fmt(t.best_validation_accuracy), str(t.evaluations), f"{t.minutes:.1f}"]
        error = t.error if t.error is None or len(t.error) <= 160 else t.error[:159] + "…"
        cells += [_fmt(t.params.get(k)) for k in keys] + [(error or "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    gain = f" ({summary.gain:+.4f} over the defaults)" if summary.gain is not None else ""
    lines += [
        "",
        f"- trial-minutes used: {summary.trial_minutes:.1f}",
        f"- trial-minutes saved by early stopping (estimate): {summary.minutes_saved:.1f} (for each stopped trial, the "
        "share of its schedule left when it stopped, at its own minutes per share of schedule)",
        f"- the defaults: {_fmt(summary.defaults_score)}",
        f"- best: {_fmt(summary.best_score)}{gain}, trial {summary.best_trial or '-'}",
    ]
    if summary.profile:
        lines.append(
            f"- the best setting, as a profile: `{summary.profile}`; `bertops run --profile {summary.profile}` "
            "trains it, evaluates it once on the eval split and records the run"
        )
    lines += ["", "![validation score per trial](trials.png)", ""]
    return "\n".join(lines)


def plot(trials: list[TrialRecord], path: Path) -> None:
    """Validation score against step, one line per trial; early-stopped trials dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for t in trials:
        if not t.validation:
            continue
        style = "--" if t.status == STOPPED else ":" if t.status == ERROR else "-"
        label = f"{t.trial_id}{' (defaults)' if t.defaults else ''} {t.status}"
        ax.plot([r["step"] for r in t.validation], [r[METRIC] for r in t.validation], style, marker=".", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{METRIC} (validation slice)")
    if any(t.validation for t in trials):
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
