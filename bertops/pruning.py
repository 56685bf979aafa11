"""`bertops models prune`: which versions' artifacts the model store can lose, and deleting them.

Kept apart from the store itself (bertops.model_store), which every stage that fetches a model
imports: the policy reads settings (`serve.embedding_model`) no training stage depends on.
"""

from __future__ import annotations

from pathlib import Path

from bertops.config import Config
from bertops.model_store import STORE_ENV, StoreError, StoreUnreachable, registry_for, store_for
from bertops.registry import PRUNED, masked


def prune_versions(
    config: Config, root: Path = Path("."), keep_newest: int = 5, keep_rollbacks: int = 3, dry_run: bool = False
) -> list[dict]:
    """`bertops models prune`: delete the artifacts of the versions nothing needs any more (see
    `Registry.prune` for what is kept; also kept here: a version `serve.embedding_model` pins, and
    versions packaged before the model store, which have no artifact in it) from the model store and
    this machine's cache of it. (BentoML's own store is per machine and an endpoint may run from an
    old version's Bento: `bentoml delete`.)

    Before anything changes, the store this machine sees must be the one the versions were stored in
    (a registry shared with a store URL not set here would mark versions whose files stay). Then the
    registry marks them pruned, in one transaction, and the files go: a failure half-way leaves files
    nobody points at (the next run deletes them), never a registered version without its artifact.
    Returns one entry per version: its name, artifact bytes, whether its file was (would be) removed."""
    registry, store = registry_for(config, root), store_for(config, root)
    name = config.package.model_name
    records = registry.versions(name)
    keep = {v for v, record in records.items() if not record.get("artifact")} | pinned_versions(config, name)
    planned = registry.prune(name, keep_newest, keep_rollbacks, dry_run=True, keep=keep)
    present = {}
    for version in planned:
        present[version] = store.exists(name, version)
        recorded = records[version]["artifact"].get("uri")
        if not present[version] and recorded and recorded != store.uri(name, version):
            raise StoreError(
                f"{name}:{version} was stored at {masked(recorded)}, and this machine's model store is "
                f"{masked(store.url)}: set {STORE_ENV} (or registry.store) to the store the team's versions are "
                "in, then prune again; nothing was changed"
            )
    if dry_run:
        return [_pruned_entry(records, v, present[v]) for v in planned]
    pruned = registry.prune(name, keep_newest, keep_rollbacks, keep=keep)
    removed, records = {}, registry.versions(name)  # read again: one may have been registered since
    try:
        for version, record in records.items():  # this run's, and any an earlier run left
            if record["stage"] == PRUNED:
                removed[version] = store.delete(name, version)
    except StoreError as exc:
        raise StoreUnreachable(
            f"{len(pruned)} version(s) of {name} are marked pruned, but deleting their files failed ({exc}); "
            "run `bertops models prune` again when the store is reachable: it deletes the files of versions "
            "marked before"
        ) from None
    return [_pruned_entry(records, v, removed.get(v, False)) for v in pruned]


def _pruned_entry(records: dict[str, dict], version: str, removed: bool) -> dict:
    return {"version": version, "bytes": (records[version].get("artifact") or {}).get("bytes"), "removed": removed}


def pinned_versions(config: Config, name: str) -> set[str]:
    """Versions of `name` the config names explicitly (`serve.embedding_model: NAME:VERSION`, which
    every evaluate fetches): prune keeps them."""
    pinned, _, version = (config.serve.embedding_model or "").partition(":")
    return {version} if pinned == name and version else set()
