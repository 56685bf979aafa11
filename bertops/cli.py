"""The `bertops` command: one verb per stage (the same word as the DVC stage and Prefect task).

Each verb parses the config and calls one function; errors the user can fix end with a
one-paragraph message and exit code 1 (2 for bad config), never a deep traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from bertops.config import Config, ConfigError, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="bertops: validate, version, train, gate and serve BERT models."
)
models_app = typer.Typer(no_args_is_help=True, help="Inspect the model registry.")
app.add_typer(models_app, name="models")
runs_app = typer.Typer(
    invoke_without_command=True, help="Recorded runs (DVC experiments of `bertops run`): list and compare."
)
app.add_typer(runs_app, name="runs")

ParamsOpt = typer.Option(Path("params.yaml"), "--params", help="the params file (all defaults live here)")
ProfileOpt = typer.Option(None, "--profile", "-p", help="a profile laid over params.yaml, e.g. configs/smoke.yaml")
SetOpt = typer.Option([], "--set", "-s", help="dotted override, repeatable: -s finetune.lr=3e-5")

T = TypeVar("T")


def _config(params: Path, profile: Path | None, overrides: list[str]) -> Config:
    try:
        return load_config(params, profile, overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(stage: str, fn: Callable[[], T]) -> T:
    """Run a stage; known failures print their message and exit 1, or TRANSIENT_EXIT (75) when a
    retry may fix them (a source or cluster that could not be reached)."""
    from bertops.errors import TRANSIENT_EXIT, USER_ERRORS, is_transient

    handled: tuple[type[BaseException], ...] = (*USER_ERRORS, ConnectionError, TimeoutError)
    try:
        return fn()
    except handled as exc:
        typer.echo(f"error: {stage} failed: {exc}", err=True)
        raise typer.Exit(TRANSIENT_EXIT if is_transient(exc) else 1) from None


def _retrain_flow():
    """The Prefect flow (the scheduler layer, package `bertops_flows`): reached by name at call
    time, so the library never imports its orchestrator."""
    import importlib

    return importlib.import_module("bertops_flows.pipeline").retrain


def _echo_json(value: object) -> None:
    typer.echo(
        json.dumps(value if isinstance(value, dict) else getattr(value, "__dict__", value), indent=2, default=str)
    )


@app.command()
def ingest(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Copy the corpus into data/raw/<dataset>/ (DVC-tracked)."""
    from bertops.data.ingest import ingest as run

    cfg = _config(params, profile, set_)
    _echo_json(_run("ingest", lambda: run(cfg)))


@app.command()
def validate(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Great Expectations suite on the raw corpus; fails (exit 1) naming each broken expectation."""
    from bertops.data.validation import validate as run

    cfg = _config(params, profile, set_)
    report = _run("validate", lambda: run(cfg))
    typer.echo(report.summary())
    typer.echo(f"report: {cfg.paths.reports}/validate/report.json  Data Docs: {report.data_docs}")


@app.command()
def prepare(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Normalise, de-duplicate, split and tokenize the corpus into data/prepared/<dataset>/."""
    from bertops.data.prepare import prepare as run

    cfg = _config(params, profile, set_)
    _echo_json(_run("prepare", lambda: run(cfg)))


@app.command()
def finetune(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Fine-tune the encoder for the corpus's task (this process, or Ray workers)."""
    from bertops.training.finetune import finetune as run

    cfg = _config(params, profile, set_)
    result = _run("finetune", lambda: run(cfg))
    _echo_json({k: v for k, v in result.__dict__.items() if k != "history"})


@app.command()
def distill(
    if_enabled: bool = typer.Option(False, "--if-enabled", help="the pipeline stage: only when distill.enabled"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Distil the fine-tuned teacher into a smaller student (models/<dataset>-student)."""
    from dataclasses import asdict

    from bertops.training.distill import distill_stage, run_distill

    cfg = _config(params, profile, set_)
    if if_enabled:
        _echo_json(_run("distill", lambda: distill_stage(cfg)))
        return
    result = _run("distill", lambda: run_distill(cfg))
    _echo_json({k: v for k, v in asdict(result).items() if k != "history"})
    if not cfg.distill.enabled:
        typer.echo(
            "judge and ship the student: bertops evaluate -s distill.enabled=true && bertops gate -s "
            "distill.enabled=true && bertops package -s distill.enabled=true (or distill.enabled: true in "
            "params.yaml, to chain it in the pipeline)"
        )


@app.command()
def pretrain(
    prepare_only: bool = typer.Option(False, "--prepare-only", help="build the corpus and tokenizer, do not train"),
    if_enabled: bool = typer.Option(False, "--if-enabled", help="the pipeline stage: only when pretrain.enabled"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """BERT pretraining (masked LM + next-sentence prediction) on the pretrain corpus."""
    from bertops.pretraining.run import ensure_prepared, pretrain_stage
    from bertops.pretraining.run import run_pretrain as run

    cfg = _config(params, profile, set_)
    if prepare_only:
        _echo_json(_run("pretrain", lambda: ensure_prepared(cfg, Path("."))))
        return
    metrics = _run("pretrain", lambda: pretrain_stage(cfg) if if_enabled else run(cfg))
    _echo_json(metrics)
    if metrics.get("enabled") is not False and not cfg.pretrain.enabled:
        typer.echo(
            "fine-tune from it: bertops prepare -s finetune.model=pretrained && "
            "bertops finetune -s finetune.model=pretrained (or pretrain.enabled: true and "
            "finetune.model: pretrained in params.yaml, to chain it in the pipeline)"
        )


@app.command()
def tune(
    resume: bool = typer.Option(
        False, "--resume", help="continue the interrupted search (same config it started with)"
    ),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Search finetune settings on Ray Tune (the tune: section; ASHA stops bad trials), scored on the
    validation slice only; the best is written as a profile, configs/tuned-<dataset>.yaml."""
    from bertops.tuning import TuneInterrupted, markdown
    from bertops.tuning import tune as run

    cfg = _config(params, profile, set_)

    def search():
        try:
            return run(cfg, Path("."), resume=resume, profile=profile)
        except TuneInterrupted as exc:
            typer.echo(f"interrupted: {exc}", err=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: `bertops tune --resume` continues the search", err=True)
            raise typer.Exit(130) from None

    summary = _run("tune", search)
    typer.echo(markdown(summary))
    typer.echo(
        f"train it and evaluate it once on the eval split (a recorded run): bertops run --profile {summary.profile}"
    )


@app.command()
def evaluate(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Metrics, slices, behavioural checks, serving cost and the champion comparison on the eval split."""
    from bertops.evaluation.evaluate import evaluate as run

    cfg = _config(params, profile, set_)
    _run("evaluate", lambda: run(cfg))
    typer.echo((cfg.paths.reports / "evaluate" / "summary.md").read_text())  # each task writes its own


@app.command()
def gate(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Decide whether the evaluated model may be promoted; exit 1 when rejected."""
    from bertops.evaluation.gate import gate as run

    cfg = _config(params, profile, set_)
    decision = _run("gate", lambda: run(cfg))
    typer.echo(decision.to_markdown())
    if not decision.approved:
        typer.echo("error: gate rejected the model: " + "; ".join(decision.reasons), err=True)
        raise typer.Exit(1)


@app.command()
def package(
    embedding_only: bool = typer.Option(
        False, "--embedding-only", help="package an encoder alone for /embed (scored and gated on retrieval)"
    ),
    encoder: str | None = typer.Option(
        None, "--encoder", help="with --embedding-only: a folder or hub id (default: finetune.model)"
    ),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Save the approved model in the BentoML store, build its Bento, register a candidate; with
    --embedding-only, an encoder with no task head (serve it alone, or name it in serve.embedding_model)."""
    from bertops.packaging import package as run
    from bertops.packaging import package_embedding

    cfg = _config(params, profile, set_)
    if encoder is not None and not embedding_only:
        typer.echo("error: --encoder is for --embedding-only", err=True)
        raise typer.Exit(2)
    if embedding_only:
        _echo_json(_run("package", lambda: package_embedding(cfg, encoder=encoder)))
    else:
        _echo_json(_run("package", lambda: run(cfg)))


@app.command()
def promote(
    version: str | None = typer.Argument(None, help="registry version (default: the last packaged)"),
    force: bool = typer.Option(False, "--force", help="promote despite a missing/negative gate decision"),
    reason: str = typer.Option("", "--reason", help="why (recorded in the history; required with --force)"),
    canary: float | None = typer.Option(None, "--canary", help="send this percent of requests to VERSION"),
    shadow: bool = typer.Option(False, "--shadow", help="run VERSION on every request, answers discarded"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Mark a model version as production (the endpoint follows), or start a canary or a shadow of
    it; promoting the canary's version completes the rollout, `bertops rollback` withdraws it."""
    from bertops import server
    from bertops.packaging import promote as run

    cfg = _config(params, profile, set_)
    _echo_json(
        _run("promote", lambda: run(cfg, version=version, reason=reason, force=force, canary=canary, shadow=shadow))
    )
    followed = _run("serve", lambda: server.follow_registry(cfg))
    if followed:
        typer.echo(followed)


@app.command()
def rollback(
    reason: str = typer.Option("", "--reason", help="why (recorded in the history)"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Withdraw a running canary or shadow; without one, make the previous production version
    production again."""
    from bertops import server
    from bertops.model_store import registry_for

    cfg = _config(params, profile, set_)
    registry, name = registry_for(cfg), cfg.package.model_name
    routing = _run("rollback", lambda: registry.routing(name))
    if routing.canary or routing.shadow:
        withdrawn = _run("rollback", lambda: registry.withdraw(name, reason or "rolled back"))
        typer.echo(f"{name}: withdrew {', '.join(withdrawn)}; production stays {routing.production}")
    else:
        target = _run("rollback", lambda: registry.rollback(name, reason))
        typer.echo(f"{name}: production is now {target}")
    followed = _run("serve", lambda: server.follow_registry(cfg))
    typer.echo(followed or "no detached server is running; `bertops serve --detach` serves the new version")


@app.command()
def serve(
    detach: bool = typer.Option(False, "--detach", help="start in the background, wait until ready, return"),
    stop: bool = typer.Option(False, "--stop", help="stop a server started with --detach"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Serve the registry's production model on serve.host:serve.port, following the registry."""
    from bertops import server

    cfg = _config(params, profile, set_)
    if stop:
        typer.echo(_run("serve", lambda: server.stop(cfg)))
        return
    if detach:
        url = _run("serve", lambda: server.start_detached(cfg))
        typer.echo(
            f"serving {server.describe(cfg)} at {url}\n"
            f"try: curl -s -X POST {url}/classify -H 'Content-Type: application/json' "
            '-d \'{"texts": ["a gripping, beautifully acted film"]}\'\n'
            f"stop: bertops serve --stop   (log: {server.log_path(cfg)})"
        )
        return
    _run("serve", lambda: server.run_foreground(cfg))


@app.command()
def monitor(
    url: str | None = typer.Option(None, "--url", help="the endpoint (default: monitor.url, else serve.host:port)"),
    version: str | None = typer.Option(
        None, "--version", help="the version whose window to judge (default: production)"
    ),
    window_file: Path | None = typer.Option(None, "--window-file", help="judge a saved GET /monitor/window body"),
    build_reference: bool = typer.Option(
        False, "--build-reference", help="a version packaged without a reference profile: compute it now"
    ),
    serve_: bool = typer.Option(
        False, "--serve", help="run the check as a Prefect deployment every monitor.interval_s"
    ),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Compare what the production endpoint receives and answers with what its model was judged on:
    per feature a drift statistic and verdict (reports/monitor/); drift may start a retrain."""
    import importlib

    from bertops.monitoring.monitor import markdown
    from bertops.monitoring.monitor import monitor as run

    cfg = _config(params, profile, set_)
    if serve_:
        flows = importlib.import_module("bertops_flows.monitor")
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
        typer.echo(f"serving deployment drift-watch/{cfg.monitor.deployment} (every {cfg.monitor.interval_s:g}s); "
                   "Ctrl-C stops it")  # fmt: skip
        flows.drift_watch.serve(
            name=cfg.monitor.deployment,
            interval=cfg.monitor.interval_s,
            parameters={
                "params": str(params),
                "profile": str(profile) if profile else None,
                "overrides": list(set_),
                "url": url,
            },  # fmt: skip
            global_limit=1,
            tags=["bertops", "drift"],
            description="bertops drift monitoring of the production endpoint",
        )
        return
    result = _run(
        "monitor", lambda: run(cfg, url=url, version=version, window_file=window_file, build_reference=build_reference)
    )
    typer.echo(markdown(result))
    typer.echo(f"report: {cfg.paths.reports}/monitor/report.json")


@app.command("run")
def run_pipeline(
    flow_name: str = typer.Argument("retrain", help="the flow to run: retrain (ingest ... promote)"),
    executor: str = typer.Option("auto", help="dvc (dvc repro per stage) | direct (call stages in-process) | auto"),
    force: bool = typer.Option(False, "--force", help="run every stage even if nothing changed"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Run the retrain flow once, now: one Prefect flow run with a task per stage and a timing table."""
    if flow_name != "retrain":
        typer.echo(f"error: unknown flow {flow_name!r}; the flows are: retrain", err=True)
        raise typer.Exit(2)
    retrain = _retrain_flow()
    _config(params, profile, set_)  # fail fast on bad config
    state = retrain(
        params=str(params),
        profile=str(profile) if profile else None,
        overrides=list(set_),
        executor=executor,
        force=force,
        return_state=True,
    )
    if state.is_completed():
        summary = state.result()
        typer.echo(summary.get("timing_table") or state.message or "done")
        return
    if state.is_cancelled():
        typer.echo(f"skipped: {state.message}")
        return
    typer.echo(f"error: the retrain run ended {state.name}: {state.message}", err=True)
    raise typer.Exit(1)


@app.command()
def schedule(
    cron: str | None = typer.Option(None, "--cron", help='cron schedule, e.g. "0 3 * * *" (default: schedule.cron)'),
    interval: float | None = typer.Option(None, "--interval", help="or: every N seconds"),
    name: str | None = typer.Option(None, "--name", help="deployment name (default: schedule.deployment)"),
    executor: str = typer.Option("auto", help="passed to every run"),
    on_drift: bool = typer.Option(
        False, "--on-drift", help="also start a run when `bertops monitor` reports drift (event bertops.drift.detected)"
    ),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Serve the retrain flow as a Prefect deployment on a schedule (runs until stopped).

    The params path, profile and overrides become the deployment's parameters, visible and
    editable in the Prefect UI. One run at a time (deployment concurrency limit 1, a colliding run is
    cancelled, + workspace lock). --on-drift: drift found by `bertops monitor` starts a run too."""
    retrain = _retrain_flow()
    cfg = _config(params, profile, set_)
    if cron and interval:
        typer.echo("error: give --cron or --interval, not both", err=True)
        raise typer.Exit(2)
    timing = {"interval": interval} if interval else {"cron": cron or cfg.schedule.cron}
    parameters = {
        "params": str(params),
        "profile": str(profile) if profile else None,
        "overrides": list(set_),
        "executor": executor,
    }
    typer.echo(f"serving deployment retrain/{name or cfg.schedule.deployment} ({timing}); Ctrl-C stops it")
    # A process started in the background by a non-interactive shell (nohup, `cmd &` in a script,
    # some CI runners) inherits SIGINT *ignored*, and Python keeps it so: Ctrl-C / `kill -INT`
    # would then never stop the schedule. Make "Ctrl-C stops it" true wherever it was started.
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    import importlib

    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    triggers = [importlib.import_module("bertops_flows.monitor").drift_trigger(cfg, parameters)] if on_drift else []
    if on_drift:
        typer.echo(f"and on the event bertops.drift.detected about {cfg.package.model_name}")
    retrain.serve(
        name=name or cfg.schedule.deployment,
        parameters=parameters,
        triggers=triggers,
        # a run due while another runs (a drift event during a nightly run) is cancelled, not queued
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        limit=1,
        tags=["bertops", cfg.ingest.dataset],
        description="bertops scheduled retraining",
        **timing,
    )


@app.command()
def dashboard(
    detach: bool = typer.Option(False, "--detach", help="run in the background"),
    stop: bool = typer.Option(False, "--stop", help="stop a dashboard started with --detach"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Start a local Prefect server with its UI (runs, artifacts, schedules) on dashboard.host:port."""
    import os

    from bertops import server

    cfg = _config(params, profile, set_)
    if stop:
        typer.echo(server.stop_dashboard(cfg))
        return
    url = server.dashboard_url(cfg)
    hint = (
        f"Prefect UI: {url}\npoint flows at it: export PREFECT_API_URL={url}/api\n"
        "(a shared server instead: export PREFECT_API_URL=https://prefect.example.com/api)"
    )
    if detach:
        _run("dashboard", lambda: server.start_dashboard(cfg))
        typer.echo(f"{hint}\nstop: bertops dashboard --stop")
        return
    typer.echo(hint)
    command = server.dashboard_command(cfg)
    os.execve(command[0], command, server.dashboard_env(cfg))


MODEL_HEADLINE = ("accuracy", "entity_f1", "exact_match", "f1")


@models_app.command("list")
def models_list(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Versions with their stage and key metrics."""
    from bertops.model_store import registry_for

    cfg = _config(params, profile, set_)
    registry = registry_for(cfg)
    versions = _run("models", lambda: registry.versions(cfg.package.model_name))
    if not versions:
        typer.echo(f"no versions of {cfg.package.model_name} yet")
    routing = _run("models", lambda: registry.routing(cfg.package.model_name))
    if routing.canary:
        typer.echo(f"canary: {routing.canary} takes {routing.canary_percent:g}% of requests")
    if routing.shadow:
        typer.echo(f"shadow: {routing.shadow} answers every request in the background")
    for version, record in versions.items():
        metrics = record.get("metrics") or {}
        # the task's headline figures (classification: accuracy; NER: entity_f1; QA: exact_match, f1)
        shown = [f"{key}={metrics[key]:.4f}" for key in MODEL_HEADLINE if isinstance(metrics.get(key), int | float)]
        retrieval = (metrics.get("embedding") or {}).get("retrieval") or {}
        if "recall@1" in retrieval:
            shown.append(f"embedding recall@1={retrieval['recall@1']:.4f}")
        figures = "  ".join(shown) or "no metrics"
        typer.echo(f"{version}  {record['stage']:<10}  {figures}  registered={record['registered_at']}")


@models_app.command("show")
def models_show(
    version: str, params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt
) -> None:
    """One version's full record: lineage, gate decision, metrics."""
    from bertops.model_store import registry_for

    cfg = _config(params, profile, set_)
    versions = _run("models", lambda: registry_for(cfg).versions(cfg.package.model_name))
    if version not in versions:
        typer.echo(f"error: no version {version!r}; known: {sorted(versions)}", err=True)
        raise typer.Exit(1)
    _echo_json(versions[version])


@models_app.command("history")
def models_history(params: Path = ParamsOpt, profile: Path | None = ProfileOpt, set_: list[str] = SetOpt) -> None:
    """Every registration, promotion and rollback with who/when/why."""
    from bertops.model_store import registry_for

    cfg = _config(params, profile, set_)
    for event in _run("models", lambda: registry_for(cfg).history(cfg.package.model_name)):
        typer.echo(
            f"{event['when']}  {event['action']:<9} {event['stage']:<10} {event['version']}  "
            f"previous={event['previous']}  by={event['who']}  forced={event['forced']}  reason={event['reason']}"
        )


@models_app.command("prune")
def models_prune(
    keep: int = typer.Option(5, "--keep", min=0, help="keep the N most recently registered versions"),
    keep_rollbacks: int = typer.Option(
        3, "--keep-rollbacks", min=1, help="keep the last N production versions (what rollback walks back through)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would be pruned"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Delete the model-store artifacts of versions nothing needs any more. Production, canary, shadow
    and staging versions are always kept; pruned versions stay in the registry and its history."""
    from bertops.pruning import prune_versions

    cfg = _config(params, profile, set_)
    pruned = _run("models prune", lambda: prune_versions(cfg, Path("."), keep, keep_rollbacks, dry_run))
    verb = "would prune" if dry_run else "pruned"
    for entry in pruned:
        size = f"{(entry['bytes'] or 0) / 1e6:.1f} MB" if entry["removed"] else "its file was already gone"
        typer.echo(f"{verb} {cfg.package.model_name}:{entry['version']}  ({size})")
    freed = sum(entry["bytes"] or 0 for entry in pruned if entry["removed"])
    typer.echo(
        f"{len(pruned)} version(s) {verb}, {freed / 1e6:.1f} MB {'to free' if dry_run else 'freed'}"
        + (" (dry run: nothing changed)" if dry_run else "")
    )


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="newest N runs"),
) -> None:
    """The runs recorded in this workspace, newest first: params that vary between them, headline metrics."""
    if ctx.invoked_subcommand:
        return
    from bertops import experiments

    typer.echo(experiments.runs_table(_run("runs", lambda: experiments.list_runs(Path("."), limit))))


@runs_app.command("compare")
def runs_compare(
    a: str | None = typer.Argument(None, help="a run (name or commit); default: the production model's run"),
    b: str | None = typer.Argument(None, help="another run; default: the newest run"),
    all_metrics: bool = typer.Option(False, "--all", help="every metric, not only the headline ones"),
    params: Path = ParamsOpt,
    profile: Path | None = ProfileOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Two runs side by side: the params that differ, the metrics (B - A), both training curves
    (sparklines here, a PNG under reports/runs/)."""
    from bertops import experiments

    cfg = _config(params, profile, set_)
    root = Path(".")

    def pick() -> tuple[experiments.Run, experiments.Run]:
        newest = experiments.list_runs(root, limit=1)
        if not newest:
            raise experiments.ExperimentError("no runs recorded yet: `bertops run` records each run")
        first = a or experiments.production_run(root, cfg)
        if first is None:
            raise experiments.ExperimentError(
                f"the production model of {cfg.package.model_name} was not made by a recorded run; "
                "name two runs: bertops runs compare A B"
            )
        return experiments.find_run(root, first), experiments.find_run(root, b) if b else newest[0]

    run_a, run_b = _run("runs", pick)
    if run_a.rev == run_b.rev:  # the first run of a workspace: the production model's run is the newest
        typer.echo(
            f"nothing to compare: A and B are the same run, {run_a.name}"
            + (" (the production model's run is also the newest)" if a is None and b is None else "")
            + "; name two runs: bertops runs compare A B (bertops runs lists them)"
        )
        return
    comparison = experiments.compare(run_a, run_b)
    typer.echo(experiments.comparison_markdown(comparison, all_metrics=all_metrics))
    plot = experiments.plot_comparison(comparison, cfg.paths.reports / "runs" / f"{run_a.name}-vs-{run_b.name}.png")
    typer.echo(f"curves: {plot}")


def _one_line_summaries(*apps: typer.Typer) -> None:
    """`bertops --help` lists each command with the first paragraph of its docstring, and in Typer's
    rich mode it keeps the paragraph's line breaks (a summary broken mid-sentence): give each command
    that paragraph (of its help= text where it has one) as one line."""
    import inspect

    for typer_app in apps:
        for info in typer_app.registered_commands:
            doc = inspect.cleandoc(info.help) if info.help else inspect.getdoc(info.callback) or ""
            if info.short_help is None and doc:
                info.short_help = " ".join(doc.split("\n\n")[0].split())


_one_line_summaries(app, models_app, runs_app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
