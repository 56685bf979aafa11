"""Pruning the model store: what `bertops models prune` deletes, keeps and says; what `models list` shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertops.cli import app
from bertops.config import config_from_dict
from bertops.model_store import (
    ModelStore,
    StoreError,
    StoreUnreachable,
    fetch_version,
    registry_for,
    store_for,
)
from bertops.pruning import prune_versions
from bertops.registry import RegistryError
from tests.conftest import REPO, smoke_config


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """A registry and a model store in tmp_path (the defaults: registry/registry.db, registry/store)
    holding v1..v4 of the model, each an artifact of its own; v1 then v2 promoted."""
    for variable in ("BERTOPS_REGISTRY_URL", "BERTOPS_STORE_URL", "BERTOPS_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = smoke_config()
    registry, store, name = registry_for(cfg), store_for(cfg), cfg.package.model_name
    for i, version in enumerate(("v1", "v2", "v3", "v4")):
        folder = tmp_path / "built" / version
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(bytes([i]) * 1000 * (i + 1))
        artifact = store.put(name, version, folder)
        registry.register(name, version, {"artifact": artifact, "gate": {"approved": True}})
    for version in ("v1", "v2"):
        registry.promote(name, version)
    fetch_version(cfg, "v1")  # cached on this machine, as an endpoint that served it would have
    return tmp_path


def _tar(root: Path, version: str) -> Path:
    cfg = smoke_config()
    return root / cfg.paths.registry / "store" / cfg.package.model_name / f"{version}.tar"


def test_prune_deletes_the_artifacts_of_unneeded_versions_only(workspace: Path):
    cfg = smoke_config()
    cache = workspace / cfg.paths.registry / "cache" / cfg.package.model_name
    assert any(p.name.startswith("v1-") for p in cache.iterdir())

    planned = prune_versions(cfg, keep_newest=1, keep_rollbacks=1, dry_run=True)
    assert [(e["version"], e["removed"]) for e in planned] == [("v1", True), ("v3", True)]  # would be removed
    assert all(_tar(workspace, v).is_file() for v in ("v1", "v2", "v3", "v4"))  # a dry run deletes nothing

    sizes = {v: _tar(workspace, v).stat().st_size for v in ("v1", "v3")}
    windows = _tar(workspace, "v1").parent / "windows"
    for version in ("v1", "v2"):  # drift windows two endpoint workers shared while serving them
        (windows / version).mkdir(parents=True)
        (windows / version / "host-7.npz").write_bytes(b"a window")
    pruned = prune_versions(cfg, keep_newest=1, keep_rollbacks=1)
    assert [(e["version"], e["removed"]) for e in pruned] == [("v1", True), ("v3", True)]
    assert [e["bytes"] for e in pruned] == [sizes["v1"], sizes["v3"]]  # what the registry recorded at package time
    assert not _tar(workspace, "v1").exists() and not _tar(workspace, "v3").exists()
    assert _tar(workspace, "v2").is_file() and _tar(workspace, "v4").is_file()  # production, the newest
    assert not any(p.name.startswith("v1-") for p in cache.iterdir())  # this machine's copy too
    assert sorted(p.name for p in windows.iterdir()) == ["v2"]  # a pruned version's windows go with it
    with pytest.raises(RegistryError, match="v1 was pruned"):
        fetch_version(cfg, "v1")
    assert fetch_version(cfg, "v2").is_dir()


def test_a_prune_that_stopped_before_deleting_is_finished_by_the_next(workspace: Path, monkeypatch):
    """The registry marks first, the files go after: a run that dies between the two leaves files no
    version points at, and the next run deletes them."""
    cfg = smoke_config()
    registry_for(cfg).prune(cfg.package.model_name, keep_newest=1, keep_rollbacks=1)  # marked, not deleted
    assert _tar(workspace, "v1").is_file()
    assert prune_versions(cfg, keep_newest=1, keep_rollbacks=1) == []  # nothing new to mark...
    assert not _tar(workspace, "v1").exists() and not _tar(workspace, "v3").exists()  # ...the files go


def test_prune_changes_nothing_when_this_machine_sees_another_store(workspace: Path, tmp_path: Path, monkeypatch):
    """A shared registry with a store URL not set on this machine: the versions' files are elsewhere, so
    marking them would free nothing and lose them for good. Refused before anything changes."""
    cfg = smoke_config()
    monkeypatch.setenv("BERTOPS_STORE_URL", str(tmp_path / "another-store"))
    with pytest.raises(StoreError, match=r"v1 was stored at .*registry/store/.*BERTOPS_STORE_URL.*nothing was changed"):
        prune_versions(cfg, keep_newest=1, keep_rollbacks=1)
    assert "pruned" not in {r["stage"] for r in registry_for(cfg).versions(cfg.package.model_name).values()}
    assert _tar(workspace, "v1").is_file() and _tar(workspace, "v3").is_file()
    result = CliRunner().invoke(
        app, ["models", "prune", "--keep", "1", "--keep-rollbacks", "1", "--params", str(REPO / "params.yaml"),
              "--profile", str(REPO / "configs" / "smoke.yaml")],
    )  # fmt: skip
    assert result.exit_code == 1 and "BERTOPS_STORE_URL" in result.output, result.output


def test_prune_keeps_pinned_and_storeless_versions_and_says_what_it_freed(workspace: Path, monkeypatch):
    cfg = smoke_config()
    name = cfg.package.model_name
    registry = registry_for(cfg)
    registry.register(name, "v0", {"model_tag": f"{name}:v0"})  # packaged before the model store: no artifact
    tree = cfg.to_dict()
    tree["serve"]["embedding_model"] = f"{name}:v1"  # every evaluate fetches it
    pinned = config_from_dict(tree)
    _tar(workspace, "v3").unlink()  # gone from the store already (by hand)
    # the two newest are v0 (registered last) and v4; v2 is production; v1 is pinned
    unpinned = prune_versions(cfg, keep_newest=2, keep_rollbacks=1, dry_run=True)
    assert [(e["version"], e["removed"]) for e in unpinned] == [("v1", True), ("v3", False)]
    pruned = prune_versions(pinned, keep_newest=2, keep_rollbacks=1)
    assert [(e["version"], e["removed"]) for e in pruned] == [("v3", False)]  # its file was already gone
    assert _tar(workspace, "v1").is_file()
    stages = {v: r["stage"] for v, r in registry.versions(name).items()}
    assert stages["v3"] == "pruned" and stages["v1"] != "pruned"
    # a version with nothing in the store is never marked: there is nothing to free, and BentoML's copy serves
    size = _tar(workspace, "v4").stat().st_size
    assert prune_versions(pinned, keep_newest=0, keep_rollbacks=1) == [
        {"version": "v4", "bytes": size, "removed": True}
    ]
    assert registry.versions(name)["v0"]["stage"] != "pruned"


def test_a_store_that_fails_after_marking_says_so_and_the_next_prune_finishes(workspace: Path, monkeypatch):
    cfg = smoke_config()

    def unreachable(self, name, version):
        raise StoreUnreachable("cannot use the model store: connection reset; nothing was changed")

    with monkeypatch.context() as patched, pytest.raises(StoreUnreachable) as caught:
        patched.setattr(ModelStore, "delete", unreachable)
        prune_versions(cfg, keep_newest=1, keep_rollbacks=1)
    assert "2 version(s) of" in str(caught.value) and "are marked pruned" in str(caught.value)
    assert "run `bertops models prune` again" in str(caught.value)
    assert prune_versions(cfg, keep_newest=1, keep_rollbacks=1) == []
    assert not _tar(workspace, "v1").exists() and not _tar(workspace, "v3").exists()


def test_the_cli_prunes_lists_and_refuses_bad_counts(workspace: Path):
    params = ["--params", str(REPO / "params.yaml"), "--profile", str(REPO / "configs" / "smoke.yaml")]
    dry = CliRunner().invoke(app, ["models", "prune", "--keep", "1", "--keep-rollbacks", "1", "--dry-run", *params])
    assert dry.exit_code == 0, dry.output
    assert "would prune" in dry.output and "2 version(s) would prune" in dry.output and "nothing changed" in dry.output
    assert _tar(workspace, "v1").is_file()
    done = CliRunner().invoke(app, ["models", "prune", "--keep", "1", "--keep-rollbacks", "1", *params])
    assert done.exit_code == 0 and ":v1" in done.output and ":v3" in done.output, done.output
    listed = CliRunner().invoke(app, ["models", "list", *params])
    assert "v1  pruned" in listed.output and "v2  production" in listed.output, listed.output
    bad = CliRunner().invoke(app, ["models", "prune", "--keep-rollbacks", "0", *params])
    assert bad.exit_code == 2 and "--keep-rollbacks" in bad.output


def test_models_list_shows_each_versions_own_headline_metrics(workspace: Path):
    cfg = smoke_config()
    registry = registry_for(cfg)
    registry.register(cfg.package.model_name, "v5", {"metrics": {"entity_f1": 0.85821, "version": "v5"}})
    registry.register(
        cfg.package.model_name,
        "v6",
        {"metrics": {"accuracy": 0.8853, "exact_match": None, "embedding": {"retrieval": {"recall@1": 0.695}}}},
    )
    params = ["--params", str(REPO / "params.yaml"), "--profile", str(REPO / "configs" / "smoke.yaml")]
    listed = CliRunner().invoke(app, ["models", "list", *params])
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[0]: line for line in listed.output.splitlines() if line.startswith("v")}
    assert "entity_f1=0.8582" in lines["v5"] and "accuracy" not in lines["v5"]  # an NER model: no accuracy=None
    assert "accuracy=0.8853" in lines["v6"] and "embedding recall@1=0.6950" in lines["v6"]
    assert "exact_match" not in lines["v6"]
    assert "no metrics" in lines["v1"]
