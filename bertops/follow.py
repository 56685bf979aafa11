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
from collections.abc import Callable
from pathlib import Path

from bertops.model_store import ModelStore
from bertops.registry import Registry

log = logging.getLogger("bertops.follow")


class Follower:
    def __init__(
        self,
        name: str,
        registry: Registry,
        store: ModelStore,
        switch: Callable[[str, Path], None],
        current: str | None,
        poll_s: float,
    ) -> None:
        self.name, self.registry, self.store, self.switch = name, registry, store, switch
        self.current, self.poll_s = current, poll_s
        self.error: str | None = None
        self.refused: dict[str, str] = {}  # version -> why it was not loaded
        self.checked_at: float | None = None
        self.switched_at: float | None = None
        self._lock = threading.Lock()  # one check at a time (the poller and an admin reload)
        self._stop = threading.Event()

    def check(self, retry_refused: bool = False) -> dict:
        """Look at the registry now; switch if production moved. Returns `status()`."""
        with self._lock:
            try:
                production, _ = self.registry.state(self.name)
                if production and production != self.current and (retry_refused or production not in self.refused):
                    self._switch_to(production)
                self.error = None
            except Exception as exc:  # noqa: BLE001 - whatever failed, the current version keeps serving
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("following the registry: %s (still serving %s)", self.error, self.current)
            self.checked_at = time.time()
            return self.status()

    def _switch_to(self, version: str) -> None:
        record = self.registry.versions(self.name).get(version) or {}
        artifact = record.get("artifact")
        try:
            if not artifact:
                raise RuntimeError(f"{self.name}:{version} has no artifact in the model store (packaged before it?)")
            path = self.store.fetch(self.name, version, artifact["sha256"])
            self.switch(version, path)
        except Exception as exc:
            self.refused[version] = f"{type(exc).__name__}: {exc}"
            raise
        previous, self.current = self.current, version
        self.refused.pop(version, None)
        self.switched_at = time.time()
        log.warning("now serving %s:%s (was %s)", self.name, version, previous)
        self.store.remove_cached(self.name, keep={v for v in (version, previous) if v})  # previous: a quick rollback

    def status(self) -> dict:
        return {
            "following": self.name,
            "serving": self.current,
            "poll_s": self.poll_s,
            "checked_at": self.checked_at,
            "switched_at": self.switched_at,
            "error": self.error,
            "refused": dict(self.refused),
        }

    def start(self) -> Follower:
        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                self.check()

        threading.Thread(target=loop, name="bertops-follow", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
