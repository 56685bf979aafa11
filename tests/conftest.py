"""Shared test setup: offline hub, isolated BentoML/Prefect homes, the real datasets, and a
smoke-profile config factory rooted in a temporary workspace."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Before any library import reads them: never reach a hub, no telemetry, isolated stores.
_HOME = Path(tempfile.mkdtemp(prefix="bertops-tests-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "BENTOML_HOME": str(_HOME / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)


def datasets_root() -> Path:
    """The shared real datasets: $BERTOPS_DATASETS or ../shared/datasets beside the repo."""
    for candidate in (os.environ.get("BERTOPS_DATASETS"), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "sst2" / "train.tsv").is_file():
            return Path(candidate)
    raise RuntimeError("tests need the shared datasets: set BERTOPS_DATASETS to the folder holding sst2/")


try:  # every config's `$BERTOPS_DATASETS/...` search path (corpora, the embedding benchmark) resolves
    os.environ.setdefault("BERTOPS_DATASETS", str(datasets_root()))
except RuntimeError:
    pass  # the tests that need the datasets say so through datasets_root()


@pytest.fixture(scope="session")
def datasets() -> Path:
    return datasets_root()


@pytest.fixture(scope="session")
def sst2(datasets: Path) -> Path:
    return datasets / "sst2"


def smoke_config(overrides: list[str] = (), profile: bool = True):
    """params.yaml + configs/smoke.yaml + overrides; the SST-2 search path points at the datasets."""
    from bertops.config import load_config

    base = [
        f"ingest.search_paths=['{datasets_root() / 'sst2'}']",
        f"evaluate.behaviour={REPO / 'data' / 'behaviour' / 'sst2.yaml'}",
        f"evaluate.embedding.retrieval.search_paths=['{datasets_root() / 'squad-v1.1'}']",
    ]
    return load_config(
        REPO / "params.yaml", REPO / "configs" / "smoke.yaml" if profile else None, base + list(overrides)
    )


@contextmanager
def _passing(request) -> Iterator[list[bool]]:
    """Yields [ok]; ok is set once the block ends: no test failed while it ran (its leftovers can go)."""
    ok, failed = [False], request.session.testsfailed
    yield ok
    ok[0] = request.session.testsfailed == failed


@contextmanager
def scratch_dir(tmp_path_factory, request, name: str) -> Iterator[Path]:
    """A module's (or the session's) working folder, removed when its fixture ends unless a test
    failed meanwhile (kept to be read then). Packaged models are hundreds of MB each: a suite that
    kept every folder to the end filled a CI disk."""
    path = tmp_path_factory.mktemp(name)
    with _passing(request) as ok:
        yield path
    if ok[0]:
        shutil.rmtree(path, ignore_errors=True)


def _bento_store() -> set[Path]:
    return {p for kind in ("models", "bentos") for p in (_HOME / "bentoml" / kind).glob("*/*") if p.is_dir()}


@pytest.fixture(autouse=True, scope="module")
def _prune_bento_store(request):
    """Deletes the BentoML models and Bentos a test module built (through BentoML, which keeps its
    `latest` pointers right), unless one of its tests failed: each is a copy of a packaged model."""
    before = _bento_store()
    with _passing(request) as ok:
        yield
    made = _bento_store() - before
    if not made or not ok[0]:
        return
    import bentoml

    for path in made:
        tag = f"{path.parent.name}:{path.name}"
        try:
            (bentoml.models.delete if path.parent.parent.name == "models" else bentoml.delete)(tag)
        except Exception:  # a leftover costs disk, not a test result
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def make_config():
    return smoke_config


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server (started once per session on 127.0.0.1) for the registry tests."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


def tiny_bert_classifier(seed: int = 0):
    """A randomly initialised 2-layer, 16-wide BERT sequence classifier (vocabulary 50, 2 labels)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=2
    )
    return BertForSequenceClassification(config).eval()


def registry_state(root: Path, name: str = "bertops-sst2") -> dict:
    """The registry of the workspace at `root` (BERTOPS_REGISTRY_URL when set), as one dict:
    production, versions, history (what the tests compare before and after)."""
    from bertops.registry import Registry

    registry = Registry.at(Path(root) / "registry")
    return {
        "production": registry.production(name),
        "versions": registry.versions(name),
        "history": registry.history(name),
    }


def pytest_sessionfinish(session, exitstatus) -> None:
    """Prefect stops the temporary server a flow started (outside prefect_test_harness), and its
    events client gives up on it, at interpreter exit, when the console its log handler writes to
    (pytest's captured output) is closed: each line became a "--- Logging error ---" traceback
    after the results. Such failures to log are dropped from here on (logging's own switch);
    stopping the server here instead leaves the events client to fail against it, louder."""
    import logging

    logging.raiseExceptions = False
