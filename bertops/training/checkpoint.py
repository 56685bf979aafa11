"""Resumable training state: one file written atomically, bound to the data and params that made it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class Checkpoint:
    """The training state at a step, in one file written atomically, bound to what produced it:
    a checkpoint from another corpus, other params or another world size is ignored."""

    def __init__(self, folder: Path, key: dict):
        import hashlib

        self.path = folder / "state.pt"
        self.fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    @staticmethod
    def key(section, prepared_hash: str | None, world: int) -> dict:
        """What a resumable state depends on: the data, the section's params (minus cosmetic ones), the world size."""
        params = section.model_dump(mode="json", exclude={"progress", "num_threads", "checkpoint_every", "log_every"})
        return {"prepared": prepared_hash, "params": params, "world": world}

    def load(self) -> dict | None:
        """The saved state, read without executing code (`weights_only`: tensors and plain Python
        values only); a torn, foreign or code-carrying file is ignored and training starts over."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # torn, foreign, or not plain data (an object that would run code): start over
            return None
        return state if isinstance(state, dict) and state.get("fingerprint") == self.fingerprint else None

    def save(self, state: dict) -> None:
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({**state, "fingerprint": self.fingerprint}, tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state() -> dict:
    """Every generator's state as tensors and plain values (loadable with weights_only=True)."""
    import random

    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [
            name,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(position),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: dict) -> None:
    import random

    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
