"""Notifications: one JSON event per failed run, promotion or detected drift, to a log line and a webhook.

A notification never fails the work it reports on: a webhook that is down or slow is logged
and skipped.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
import socket

from bertops.config import NotifyConfig

log = logging.getLogger("bertops.notify")


def notify(policy: NotifyConfig, event: str, message: str, **details) -> dict:
    """event: "failure", "promotion" or "drift". Returns the event (with `delivered`)."""
    payload = {
        "event": event,
        "message": message,
        "text": f"bertops {event}: {message}",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        **details,
    }
    wanted = {"failure": policy.on_failure, "drift": policy.on_drift}.get(event, policy.on_promotion)
    payload["delivered"] = False
    if not wanted:
        return payload
    log.warning("bertops %s: %s", event, message) if event != "promotion" else log.info(
        "bertops %s: %s", event, message
    )
    if policy.webhook_url:
        import httpx

        try:
            reply = httpx.post(
                policy.webhook_url,
                json={k: v for k, v in payload.items() if k != "delivered"},
                timeout=policy.timeout_s,
            )
            payload["delivered"] = reply.status_code < 300
            if not payload["delivered"]:
                log.warning("webhook %s answered %s; notification not delivered", policy.webhook_url, reply.status_code)
        except httpx.HTTPError as exc:
            log.warning("webhook %s unreachable (%s); notification not delivered", policy.webhook_url, exc)
    return payload
