"""Integration fixtures: one smoke-trained workspace per session, reused by the later stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import smoke_config


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory) -> tuple[Path, object]:
    """ingest -> validate -> prepare -> finetune on the smoke profile (a few hundred SST-2 rows)."""
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.training.finetune import finetune

    root = tmp_path_factory.mktemp("workspace")
    cfg = smoke_config()
    ingest(cfg, root)
    validate(cfg, root)
    prepare(cfg, root)
    result = finetune(cfg, root)
    return root, cfg, result
