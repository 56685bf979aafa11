"""The bertops retrain flow (Prefect 3): each task is one stage, named as the stage.

Two executors run the same stages:
- `dvc`: each task runs `dvc repro STAGE` (DVC decides what is stale, versions data and models,
  records dvc.lock); used when the run is configured by params.yaml alone;
- `direct`: each task calls the stage's bertops function in-process with the given config
  (a profile and/or dotted overrides); used for tests and quick experiments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, Completed
from prefect.tasks import exponential_backoff

from bertops.config import Config, load_config
from bertops.errors import TRANSIENT_EXIT, BertopsError, PipelineError

STAGES = ("ingest", "validate", "pretrain", "prepare", "finetune", "distill", "evaluate", "gate", "package", "promote")


@dataclass
class RunContext:
    params: str
    profile: str | None
    overrides: list[str]
    executor: str
    root: str = "."

    def config(self) -> Config:
        return load_config(self.params, self.profile, self.overrides)


def _direct(stage: str) -> Callable[[Config, Path], Any]:
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.evaluation.evaluate import evaluate
    from bertops.evaluation.gate import gate
    from bertops.packaging import GateRejected, package, promote
    from bertops.pretraining.run import pretrain_stage
    from bertops.training.distill import distill_stage
    from bertops.training.finetune import finetune

    def promote_and_follow(config: Config, root: Path):
        from bertops import server

        record = promote(config, root)
        # a running endpoint switches to the new production version
        return {**record, "followed": server.follow_registry(config)}

    def gate_or_raise(config: Config, root: Path):
        decision = gate(config, root)
        if not decision.approved:
            raise GateRejected("gate rejected the model: " + "; ".join(decision.reasons))
        return decision

    return {
        "ingest": ingest,
        "validate": validate,
        "pretrain": pretrain_stage,
        "prepare": prepare,
        "finetune": finetune,
        "distill": distill_stage,
        "evaluate": evaluate,
        "gate": gate_or_raise,
        "package": package,
        "promote": promote_and_follow,
    }[stage]


def _stream(args: list[str], cwd: Path, env: dict) -> tuple[int, str]:
    """Run a command, passing its output through live (progress bars included) and keeping a copy."""
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kept = bytearray()
    sink = getattr(sys.stderr, "buffer", None)
    while chunk := process.stdout.read1(4096):
        if sink is not None:
            sink.write(chunk)
        else:
            sys.stderr.write(chunk.decode("utf-8", errors="replace"))
        sys.stderr.flush()
        kept += chunk
    return process.wait(), kept.decode("utf-8", errors="replace")


def _execute(stage: str, ctx: RunContext, extra: dict) -> str:
    """Run one stage with the chosen executor; returns "ran" or "cached" (DVC skipped it)."""
    root = Path(ctx.root)
    if ctx.executor == "dvc":
        # dvc.yaml's commands call `bertops`: make this interpreter's scripts win on PATH.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        returncode, output = _stream([sys.executable, "-m", "dvc", "repro", "--single-item", stage], root, env)
        if returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-25:])
            # DVC reports the stage command's exit status; the CLI exits TRANSIENT_EXIT when a retry may help
            raise PipelineError(stage, tail, transient=f"exited with {TRANSIENT_EXIT}" in output)
        return "cached" if "didn't change, skipping" in output or "is cached" in output else "ran"
    from bertops.errors import USER_ERRORS, is_transient

    try:
        result = _direct(stage)(ctx.config(), root)
    except USER_ERRORS as exc:
        raise PipelineError(stage, str(exc), transient=is_transient(exc)) from None
    if stage == "promote":
        extra["followed"] = result.get("followed")
    if stage in ("pretrain", "distill") and isinstance(result, dict) and result.get("enabled") is False:
        return "disabled"
    return "ran"


def _stage_task(stage: str, retries: int = 0, doc: str = "", retry_condition=None):
    def run(ctx: RunContext) -> tuple[str, float, str]:
        from bertops_flows.artifacts import publish

        logger = get_run_logger()
        started, wall = time.perf_counter(), time.time()
        extra: dict = {}
        try:
            outcome = _execute(stage, ctx, extra)
        finally:
            publish(stage, ctx.config(), Path(ctx.root), wall - 1, extra)  # also after a failure: its reports tell why
        seconds = time.perf_counter() - started
        logger.info("%s %s in %.1fs", stage, outcome, seconds)
        return stage, seconds, outcome

    run.__doc__ = doc
    return task(
        name=stage,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=5) if retries else 0,
        retry_condition_fn=retry_condition,
        cache_policy=NO_CACHE,
    )(run)


def _transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix, judged by the failure's type (never by its wording): a source,
    cluster or connection that could not be reached; not a bad corpus, a bad config or a rejection."""
    from bertops.errors import is_transient

    try:
        state.result()
    except PipelineError as exc:
        return exc.transient
    except Exception as exc:
        return is_transient(exc)
    return False


ingest_task = _stage_task(
    "ingest",
    retries=3,
    retry_condition=_transient,
    doc="Copy the corpus into data/raw (retried with backoff when the source is unreachable).",
)
validate_task = _stage_task("validate", doc="Great Expectations suite; a failure ends the run (no retry).")
pretrain_task = _stage_task(
    "pretrain",
    retries=2,
    retry_condition=_transient,
    doc="BERT pretraining (MLM + NSP) when pretrain.enabled; finetune then starts from it "
    "(retried on connection trouble, resuming from its checkpoint).",
)
prepare_task = _stage_task("prepare", doc="Normalise, de-duplicate, split, tokenize.")
finetune_task = _stage_task(
    "finetune",
    retries=2,
    retry_condition=_transient,
    doc="Fine-tune the encoder (this process or Ray workers; retried on connection trouble, "
    "resuming from its checkpoint).",
)
distill_task = _stage_task(
    "distill",
    retries=2,
    retry_condition=_transient,
    doc="Knowledge distillation into a smaller student when distill.enabled; evaluate, gate "
    "and package then judge and ship the student.",
)
evaluate_task = _stage_task("evaluate", doc="Metrics, slices, behaviour, serving cost, champion comparison.")
gate_task = _stage_task("gate", doc="Approve or reject against the policy in params.yaml (no retry).")
package_task = _stage_task("package", doc="ONNX export + checks, BentoML model + Bento; registry candidate.")
promote_task = _stage_task("promote", doc="Registry: the new version becomes production; the endpoint follows.")
TASKS = (
    ingest_task,
    validate_task,
    pretrain_task,
    prepare_task,
    finetune_task,
    distill_task,
    evaluate_task,
    gate_task,
    package_task,
    promote_task,
)


@task(name="push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def push_task(ctx: RunContext) -> str:
    """`dvc push` what the run tracks (data, models) to the DVC remote, so the next pod (a fresh
    checkout) starts from it. No remote configured: nothing to push. A failed push fails the run."""
    root = Path(ctx.root)
    if not _has_remote(root):
        return "no default DVC remote: nothing pushed (`dvc remote add -d NAME URL` to share data and models)"
    proc = subprocess.run([sys.executable, "-m", "dvc", "push", "-q"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipelineError("push", (proc.stderr or proc.stdout).strip()[-1000:] or "dvc push failed", transient=True)
    return "pushed to the DVC remote"


@contextmanager
def _env(key: str, value: str):
    """os.environ[key] = value for the block, then what it was."""
    previous = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def _experiment(config: Config, root: Path, stack: ExitStack, logger, executor: str) -> dict | None:
    """Make this run a DVC experiment when the workspace can hold one: its name (the flow run's),
    the run that made the production model (compared with at the end), params.yaml holding this
    run's values while it runs, the name in every model's lineage (BERTOPS_RUN), and the worker
    process that reads the production model's run meanwhile and, with the direct executor, commits
    the stages to DVC as they finish (`dvc repro` commits its own)."""
    from prefect.runtime import flow_run

    from bertops import experiments
    from bertops.record_worker import RecordWorker

    problem = "runs.record is false" if not config.runs.record else experiments.workspace_problem(root)
    if problem:
        logger.info("this run is not recorded as an experiment: %s", problem)
        return None
    try:
        name = experiments.unique_name(root, flow_run.name or "run")
    except BertopsError as exc:
        logger.warning("this run is not recorded as an experiment: %s", exc)
        return None
    try:
        champion = experiments.production_run(root, config)
    except BertopsError as exc:  # an unreachable registry must not stop the run; the stages will say so
        logger.warning("the production model's run is unknown: %s", exc)
        champion = None
    changed = stack.enter_context(experiments.params_applied(root, config))
    if changed:
        logger.info("params.yaml holds this run's values until it ends: %s", ", ".join(changed))
    stack.enter_context(_env(experiments.RUN_ENV, name))
    logger.info("recording this run as the DVC experiment %r (bertops runs, dvc exp show)", name)
    commits = executor == "direct"  # dvc repro commits its own stages
    # entered last, so stopped before params.yaml is put back
    worker = stack.enter_context(RecordWorker(root, champion)) if commits or champion else None
    return {"name": name, "champion": champion, "worker": worker, "commits": commits}


@task(name="record", cache_policy=NO_CACHE)
def record_task(ctx: RunContext, experiment: dict, stages: list[str]) -> str | None:
    """Save the run as a DVC experiment (the stages it reached) and publish its comparison with the
    production model's run. A run that cannot be recorded still counts: a warning, not a failure."""
    from bertops import experiments

    logger = get_run_logger()
    root, name, champion = Path(ctx.root), experiment["name"], experiment["champion"]
    worker = experiment["worker"]
    try:
        rev = experiments.record(root, name, stages, worker if experiment["commits"] else None)
        run = experiments.workspace_run(root, name, rev)  # the files just saved: no second read through DVC
    except BertopsError as exc:
        logger.warning("the run was not recorded: %s", exc)
        return None
    finally:
        if experiment["commits"] and worker and worker.problem:
            logger.warning("the record worker did not commit the stages while the run went on: %s", worker.problem)
    against = None
    if champion and champion != name:
        against = worker.champion() if worker else None  # read by the worker while the stages ran
        if against is None:  # read again: the worker may have met a passing problem
            try:
                against = experiments.find_run(root, champion)
            except experiments.ExperimentError:  # made elsewhere, or by a run that was not recorded
                pass
    if against is None:
        why = (
            f"the production model's run ({champion}) is not recorded here"
            if champion
            else "no recorded run made the production model"
        )
        logger.info("nothing to compare this run with: %s", why)
        markdown = f"# {name}\n\nNothing to compare with: {why}.\n\n" + experiments.runs_table([run]) + "\n"
    else:
        markdown = experiments.comparison_markdown(experiments.compare(against, run))
        markdown += f"\nThe curves as a plot: `bertops runs compare {against.name} {name}`\n"
    create_markdown_artifact(key="bertops-run-comparison", markdown=markdown, description=f"{name} vs production's run")
    logger.info("recorded as the DVC experiment %s (%s)", name, rev[:10])
    return rev


def _has_remote(root: Path) -> bool:
    """Whether DVC has a default remote here, the one `dvc push` uses (read in-process: no `dvc`
    subprocess when there is none)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return bool(repo.config["core"].get("remote"))


@task(name="check-for-changes", cache_policy=NO_CACHE)
def changes_task(ctx: RunContext) -> dict:
    """Whether anything the pipeline depends on changed since the last successful run (DVC decides)."""
    return pending_changes(ctx)


def pending_changes(ctx: RunContext) -> dict:
    """{stage: what changed}, by `dvc status`; ingest's "always changed" marker is not a change
    when the source still matches the ingested copy byte for byte."""
    from bertops.data.ingest import source_unchanged

    root = Path(ctx.root)
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"dvc": [proc.stderr.strip()[-300:] or "dvc status failed"]}
    status = json.loads(proc.stdout or "{}")
    if status.get("ingest") == ["always changed"] and source_unchanged(ctx.config(), root):
        status.pop("ingest")
    return status


def timing_table(timings: list[tuple[str, float, str]]) -> str:
    lines = ["| stage | seconds | outcome |", "| --- | ---: | --- |"]
    lines += [f"| {stage} | {seconds:.1f} | {outcome} |" for stage, seconds, outcome in timings]
    lines.append(f"| total | {sum(t[1] for t in timings):.1f} | |")
    return "\n".join(lines)


def run_summary(config: Config, root: Path, timings, started: float) -> str:
    """Markdown for the Prefect artifact: data version, validation, metrics, gate, promoted version.

    Only reports that this run wrote (or that DVC kept because nothing changed) are shown;
    a stage the run never reached reads as "not reached"."""
    reports = root / config.paths.reports
    reached = {stage for stage, _, _ in timings}

    def read(rel: str) -> dict:
        path = reports / rel
        stage = rel.split("/")[0]
        if not path.is_file() or (stage not in reached and path.stat().st_mtime < started):
            return {}
        return json.loads(path.read_text())

    validation, metrics = read("validate/report.json"), read("evaluate/metrics.json")
    decision, promoted = read("gate/decision.json"), read("promote/promote.json")
    lines = [
        f"# bertops run: {config.ingest.dataset}",
        "",
        f"- data version (sha256): `{validation.get('data_hash', '?')}`",
        f"- validation: {('passed' if validation.get('success') else 'FAILED') if validation else 'not reached'} "
        f"({len(validation.get('checks', []))} expectations, rows {validation.get('rows')})",
        "- eval metrics: "
        + (
            ", ".join(
                f"{k} {metrics[k]:.4f}"
                for k in ("accuracy", "macro_f1", "ece", "entity_f1", "exact_match", "f1")
                if k in metrics
            )
            or "not reached"
        ),
        f"- gate: {('approved' if decision.get('approved') else 'rejected') if decision else 'not reached'} "
        f"{decision.get('reasons') or ''}",
        f"- promoted: {promoted.get('model', '-')}:{promoted.get('version', '-')} -> {promoted.get('stage', '-')}",
        "",
        "## Stage timings",
        "",
        timing_table(timings),
    ]
    return "\n".join(lines) + "\n"


@flow(name="retrain", log_prints=True)
def retrain(
    params: str = "params.yaml",
    profile: str | None = None,
    overrides: list[str] | None = None,
    executor: str = "auto",
    root: str = ".",
    force: bool = False,
):
    """ingest -> validate -> pretrain? -> prepare -> finetune -> distill? -> evaluate -> gate -> package -> promote
    (? = when enabled in params.yaml).

    With the dvc executor, a run whose data, config and code did not change since the last
    successful run ends early in a "No change" state (unless `force`). One run per workspace at
    a time: a second one waits `schedule.lock_wait_s`, then ends as "Skipped"."""
    from bertops.atomic import workspace_lock
    from bertops.notify import notify

    overrides = list(overrides or [])
    if executor not in ("auto", "dvc", "direct"):
        raise PipelineError("run", f"unknown executor {executor!r}; choose one of auto, dvc, direct")
    # dvc repro reads <root>/params.yaml and nothing else.
    plain = not profile and not overrides and Path(params).resolve() == Path(root, "params.yaml").resolve()
    if executor == "auto":
        executor = "dvc" if plain and Path(root, "dvc.yaml").is_file() else "direct"
    if executor == "dvc" and not plain:
        raise PipelineError(
            "run",
            "the dvc executor reads params.yaml only; edit it, or use --executor direct "
            "for another params file, a profile or overrides",
        )
    started = time.time()
    ctx = RunContext(params, profile, overrides, executor, root)
    config = ctx.config()
    logger = get_run_logger()
    logger.info("executor: %s", executor)
    with workspace_lock(Path(root), config.schedule.lock_wait_s) as busy, ExitStack() as recording:
        if busy:
            logger.warning(busy)
            return Cancelled(name="Skipped", message=busy)
        timings: list[tuple[str, float, str]] = []
        setup_started = time.perf_counter()
        experiment = _experiment(config, Path(root), recording, logger, executor)
        if experiment:  # what recording adds to a run: this, the record task and the push after it
            experiment["seconds"] = time.perf_counter() - setup_started
        try:
            if executor == "dvc" and not force:
                changes = changes_task(ctx)
                if not changes:
                    message = "no change: data, config and code are as in the last successful run; nothing to do"
                    create_markdown_artifact(
                        key="bertops-run-summary",
                        markdown=f"# bertops run: no change\n\n{message}\n",
                        description=f"bertops retrain on {config.ingest.dataset}",
                    )
                    return Completed(
                        name="No change",
                        message=message,
                        data={"ok": True, "executor": executor, "changed": {}, "timings": []},
                    )
                logger.info("changed since the last run: %s", ", ".join(sorted(changes)))
            for stage_task in TASKS:
                timings.append(stage_task(ctx))
                reached = [stage for stage, _, _ in timings]
                if experiment and experiment["commits"] and "finetune" in reached:
                    # committed to DVC while the next stages run; only runs that fine-tuned are
                    # recorded (below), so nothing is committed before
                    experiment["worker"].submit(reached)
            if executor == "dvc":
                logger.info(push_task(ctx))
        except Exception as exc:
            notify(
                config.notify,
                "failure",
                str(exc)[:2000],
                dataset=config.ingest.dataset,
                stage=getattr(exc, "stage", None),
            )
            raise
        finally:
            table = timing_table(timings)
            if experiment and any(stage == "finetune" for stage, _, _ in timings):
                recording_started = time.perf_counter()
                experiment["recorded"] = record_task(ctx, experiment, [stage for stage, _, _ in timings])
                experiment["record_seconds"] = round(time.perf_counter() - recording_started, 2)
                experiment["seconds"] += experiment["record_seconds"]
            if timings:
                create_markdown_artifact(
                    key="bertops-run-summary",
                    markdown=run_summary(config, Path(root), timings, started),
                    description=f"bertops retrain on {config.ingest.dataset}",
                )
                print(table)
        if executor == "direct" and experiment and experiment.get("recorded"):
            # what the run recorded (dvc.lock's outputs) reaches the team's DVC remote, as after a dvc
            # run; push_task itself says when there is no remote
            pushing_started = time.perf_counter()
            logger.info(push_task(ctx))
            experiment["seconds"] += time.perf_counter() - pushing_started
        if timings[-1][2] == "ran":  # not when DVC found the promotion already done
            promoted = json.loads((Path(root) / config.paths.reports / "promote" / "promote.json").read_text())
            notify(
                config.notify,
                "promotion",
                f"{promoted['model']}:{promoted['version']} is now {promoted['stage']} "
                f"(was {promoted.get('previous') or 'none'})",
                **promoted,
            )
        return {
            "ok": True,
            "executor": executor,
            "timings": timings,
            "timing_table": table,
            "run": (experiment or {}).get("name"),
            "recorded": (experiment or {}).get("recorded"),
            "record_seconds": (experiment or {}).get("record_seconds"),
            # the stages were committed to DVC while the run went on (False: not, see the log; None: no
            # commit was asked of the worker: not recorded, or the dvc executor, whose stages DVC commits)
            "committed_while_running": experiment["worker"].committed if experiment and experiment["commits"] else None,
            "experiment_seconds": round(experiment["seconds"], 2) if experiment else None,
        }


pipeline = retrain  # the name this flow had before scheduling landed
