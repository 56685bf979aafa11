"""The drift-watch flow (Prefect 3): one `bertops monitor` check of the production endpoint, its
report published as dashboard artifacts. `bertops monitor --serve` serves it as a deployment on
`monitor.interval_s`; a drift it finds sends the event that `bertops schedule --on-drift` turns
into a retrain run (`drift_trigger`)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.events import DeploymentEventTrigger

from bertops.config import Config, load_config
from bertops.events import DRIFT_EVENT


def drift_trigger(config: Config, parameters: dict) -> DeploymentEventTrigger:
    """Start the deployment it is attached to on `bertops.drift.detected` about this model.

    One event = one run: the monitor sends the event at most once per `monitor.cooldown_s` and not
    while a retrain holds the workspace, and the retrain deployment cancels a run that would start
    while another is running (its concurrency limit)."""
    return DeploymentEventTrigger(
        name=f"retrain {config.package.model_name} on drift",
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": f"bertops.model.{config.package.model_name}"},
        posture="Reactive",
        threshold=1,
        parameters=parameters,
    )


@flow(name="drift-watch", log_prints=True)
def drift_watch(
    params: str = "params.yaml",
    profile: str | None = None,
    overrides: list[str] | None = None,
    url: str | None = None,
    root: str = ".",
) -> dict:
    """Compare the production endpoint's live window with its version's reference profile."""
    from bertops.monitoring.monitor import markdown, monitor

    config = load_config(params, profile, list(overrides or []))
    result = monitor(config, Path(root), url=url)
    logger = get_run_logger()
    report = result["report"]
    (logger.warning if report["verdict"] == "drift" else logger.info)("%s: %s", result["version"], report["message"])
    logger.info("retrain: %s", result["retrain"]["reason"])
    create_markdown_artifact(
        key="bertops-drift",
        markdown=markdown(result),
        description=f"drift check of {result['version']}",
    )
    if result.get("plot"):
        create_link_artifact(
            key="bertops-drift-plot",
            link=Path(result["plot"]).resolve().as_uri(),
            link_text="reference against live: lengths, confidence, labels, embeddings",
            description="the plots of the last drift check",
        )
    return {"version": result["version"], "verdict": report["verdict"], "retrain": result["retrain"]["trigger"]}
