"""Registry changes as Prefect events (the one Prefect adapter of the logic layer): each
registration, promotion, canary, shadow, withdrawal and rollback becomes the event
`bertops.model.<action>` about the resource `bertops.model.<name>`, related to the version, with
who, when, why and the stage. They show in the Prefect UI's event feed and can drive automations.

Sent only where a Prefect API is configured (PREFECT_API_URL, or a flow run's API); an event that
cannot be sent is logged and never fails the change it reports.
"""

from __future__ import annotations

import logging

log = logging.getLogger("bertops.events")


def _emit(event: str, name: str, version: str, payload: dict) -> bool | None:
    """`event` about `bertops.model.<name>`, related to `version` (bare or "name:version"): True
    when sent, None when no Prefect API is configured (never start an ephemeral server for this).
    Raises what Prefect raises; the callers log it and carry on."""
    from prefect.events import emit_event
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None
    bare = version.split(":")[-1]
    sent = emit_event(
        event=event,
        resource={"prefect.resource.id": f"bertops.model.{name}", "prefect.resource.name": name},
        related=[
            {
                "prefect.resource.id": f"bertops.model-version.{name}.{bare}",
                "prefect.resource.role": "model-version",
                "prefect.resource.name": version,
            }
        ],
        payload=payload,
    )
    return sent is not None


def announce(name: str, event: dict) -> None:
    try:
        _emit(f"bertops.model.{event['action']}", name, event["version"], event)
    except Exception as exc:  # noqa: BLE001 - reporting a change never undoes or fails it
        log.warning("could not send the Prefect event for %s %s: %s", event.get("action"), name, exc)


DRIFT_EVENT = "bertops.drift.detected"


def drift_detected(name: str, version: str, report: dict) -> bool:
    """The event `bertops.drift.detected` about `bertops.model.<name>` (what `bertops schedule
    --on-drift` starts a retrain on); True when it was sent."""
    payload = {k: report.get(k) for k in ("verdict", "message", "window", "drifted", "threshold")}
    try:
        sent = _emit(DRIFT_EVENT, name, version, payload)
    except Exception as exc:  # noqa: BLE001 - reporting drift never fails the check
        log.warning("could not send the Prefect drift event for %s: %s", version, exc)
        return False
    if sent is None:
        log.warning("drift in %s, but no Prefect API is configured (PREFECT_API_URL): no event sent", version)
    return bool(sent)
