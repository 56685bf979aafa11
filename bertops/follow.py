"""An endpoint that follows the registry, the way TensorFlow Serving follows its model base path.

`Follower.check()` asks the registry database which version is production; when that changed, it
fetches the version from the model store (sha256 checked against the registry), and hands the
local folder to the service's `switch(version, path)`, which loads and warms it beside the current
model and then swaps one reference: requests in flight finish on the old model, every answer names
the version that produced it, and the old model is released with its last batch. A background
thread checks every `serve.poll_s` seconds; `POST /admin/reload` checks at once.

What goes wrong never stops the endpoint: an unreachable database or store, a missing or altered
artifact, or a model the service refuses leaves the current version serving, and `status()` (in
GET /metadata) says why. A refused version is not fetched again until the registry moves on, or
an admin reload asks for it explicitly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bertops.model_store import DRIFT_REPORT_KEY, ModelStore
from bertops.registry import Registry, Routing

log = logging.getLogger("bertops.follow")


class Follower:
    """Keeps a service on the registry's routing: production, and an optional canary and shadow.

    `service` loads versions: `switch(version, path)` makes one production; `set_trial(role,
    version, path, percent)` starts (version given) or ends (None) the canary or the shadow. With a
    `watch`, a canary whose health fails its limits is withdrawn in the registry (who: auto)."""

    def __init__(self, name: str, registry: Registry, store: ModelStore, service, current: str | None,
                 poll_s: float, watch: CanaryWatch | None = None) -> None:  # fmt: skip
        self.name, self.registry, self.store, self.service = name, registry, store, service
        self.poll_s, self.watch = poll_s, watch
        self.serving: dict[str, str | None] = {"production": current, "canary": None, "shadow": None}
        self.canary_percent: float | None = None
        self.error: str | None = None
        self.refused: dict[str, str] = {}  # version -> why it was not loaded
        self.withdrawn: str | None = None  # the last automatic withdrawal, and why
        self.checked_at: float | None = None
        self.switched_at: float | None = None
        self.drift_checked_at: str | None = None  # the last drift check this worker shows
        self._lock = threading.Lock()  # one check at a time (the poller and an admin reload)
        self._stop = threading.Event()

    @property
    def current(self) -> str | None:
        return self.serving["production"]

    def check(self, retry_refused: bool = False) -> dict:
        """Look at the registry now and follow it. Returns `status()`."""
        with self._lock:
            try:
                routing = self.registry.routing(self.name)
                self._follow(routing, retry_refused)
                self._judge_canary()
                self.error = None
                self._pick_up_drift()
            except Exception as exc:  # noqa: BLE001 - whatever failed, the current versions keep serving
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("following the registry: %s (still serving %s)", self.error, self.serving)
            self.checked_at = time.time()
            return self.status()

    def _pick_up_drift(self) -> None:
        """The last drift check of this model, as `bertops monitor` left it in the model store, shown
        by this worker too (its gauges and /metadata): a check posts to one worker of one replica,
        or to none without the admin token. A store that cannot be read changes nothing here."""
        record = getattr(self.service, "record_drift", None)
        if record is None:
            return
        try:
            report = self.store.read_state(self.name, DRIFT_REPORT_KEY)
        except Exception as exc:  # noqa: BLE001 - the scores are a view; following goes on
            log.debug("reading the last drift check: %s", exc)
            return
        if report.get("version") and report.get("checked_at") != self.drift_checked_at:
            record(report)
            self.drift_checked_at = report.get("checked_at")

    def _wanted(self, version: str | None, retry_refused: bool) -> bool:
        return bool(version) and (retry_refused or version not in self.refused)

    def _follow(self, routing: Routing, retry_refused: bool) -> None:
        production = routing.production
        if production and production != self.serving["production"] and self._wanted(production, retry_refused):
            path = self._fetch(production)
            self._apply(production, partial(self.service.switch, production, path))
            previous, self.serving["production"] = self.serving["production"], production
            self.switched_at = time.time()
            log.warning("now serving %s:%s (was %s)", self.name, production, previous)
            self.store.remove_cached(self.name, keep={v for v in (*self.serving.values(), previous) if v})
        for role, version, percent in (
            ("canary", routing.canary, routing.canary_percent),
            ("shadow", routing.shadow, None),
        ):
            if version == self.serving[role] and (role != "canary" or percent == self.canary_percent):
                continue
            if version is None:
                self.service.set_trial(role, None, None, None)
                self.serving[role] = None
                log.warning("%s of %s ended", role, self.name)
            elif self._wanted(version, retry_refused):
                path = self._fetch(version)
                self._apply(version, partial(self.service.set_trial, role, version, path, percent))
                self.serving[role] = version
                log.warning("%s: %s:%s%s", role, self.name, version, f" takes {percent:g}%" if percent else "")
            if role == "canary":
                self.canary_percent = percent if self.serving["canary"] else None

    def _fetch(self, version: str) -> Path:
        record = self.registry.versions(self.name).get(version) or {}
        artifact = record.get("artifact")
        try:
            if not artifact:
                raise RuntimeError(f"{self.name}:{version} has no artifact in the model store (packaged before it?)")
            return self.store.fetch(self.name, version, artifact["sha256"])
        except Exception as exc:
            self.refused[version] = f"{type(exc).__name__}: {exc}"
            raise

    def _apply(self, version: str, load: Callable[[], None]) -> None:
        try:
            load()
        except Exception as exc:
            self.refused[version] = f"{type(exc).__name__}: {exc}"
            raise
        self.refused.pop(version, None)

    def _judge_canary(self) -> None:
        canary, production = self.serving["canary"], self.serving["production"]
        if self.watch is None or not canary or not production:
            return
        reason = self.watch.verdict(f"{self.name}:{canary}", f"{self.name}:{production}")  # as answers name them
        if reason is None:
            return
        # Its traffic stops here first; then the registry records it (if that write fails, the next
        # check reloads the canary, the window still holds the evidence, and it is withdrawn again).
        self.service.set_trial("canary", None, None, None)
        self.serving["canary"], self.canary_percent = None, None
        self.withdrawn = f"{canary}: {reason}"
        self.registry.withdraw(self.name, reason=f"canary {canary}: {reason}", who="auto")
        log.warning("canary %s:%s withdrawn automatically: %s", self.name, canary, reason)

    def status(self) -> dict:
        return {
            "following": self.name,
            "serving": self.serving["production"],
            "canary": self.serving["canary"],
            "canary_percent": self.canary_percent,
            "shadow": self.serving["shadow"],
            "poll_s": self.poll_s,
            "checked_at": self.checked_at,
            "switched_at": self.switched_at,
            "error": self.error,
            "refused": dict(self.refused),
            "withdrawn": self.withdrawn,
        }

    def start(self) -> Follower:
        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                self.check()

        threading.Thread(target=loop, name="bertops-follow", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


class CanaryWatch:
    """The canary's health over a sliding window, against production's in the same window:
    `verdict()` says why it must be withdrawn (error share or p95 latency over the limits), or None."""

    def __init__(
        self, window_s: float, min_requests: int, max_error_rate: float, max_p95_ratio: float, clock=time.monotonic
    ) -> None:
        self.window_s, self.min_requests = window_s, min_requests
        self.max_error_rate, self.max_p95_ratio = max_error_rate, max_p95_ratio
        self.clock = clock
        self._events: deque[tuple[float, str, float, bool]] = deque()
        self._lock = threading.Lock()

    def record(self, version: str, seconds: float, ok: bool) -> None:
        with self._lock:
            self._events.append((self.clock(), version, seconds, ok))
            self._prune()

    def _prune(self) -> None:
        horizon = self.clock() - self.window_s
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()

    def verdict(self, canary: str, production: str) -> str | None:
        with self._lock:
            self._prune()
            events = list(self._events)
        mine = [(s, ok) for _, v, s, ok in events if v == canary]
        theirs = [s for _, v, s, ok in events if v == production and ok]
        if len(mine) < self.min_requests:
            return None
        errors = sum(not ok for _, ok in mine) / len(mine)
        window = f"over the last {self.window_s:g}s ({len(mine)} canary requests)"
        if errors > self.max_error_rate:
            return f"error rate {errors:.1%} {window} exceeds serve.canary.max_error_rate {self.max_error_rate:.1%}"
        latencies = [s for s, ok in mine if ok]
        if latencies and len(theirs) >= self.min_requests:
            p95, base = _p95(latencies), _p95(theirs)
            if p95 > self.max_p95_ratio * base:
                return (
                    f"p95 latency {p95 * 1000:.1f} ms is {p95 / base:.2f}x production's {base * 1000:.1f} ms {window}, "
                    f"over serve.canary.max_p95_ratio {self.max_p95_ratio:g}"
                )
        return None


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
