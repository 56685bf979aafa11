"""Integration fixtures: one smoke-trained workspace per session, reused by the later stages."""

from __future__ import annotations

from pathlib import Path

import httpx
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


def input_drift_is_watched(cfg, root: Path, url: str, packaged, sent: list[str]) -> None:
    """An NER (or QA) version carries the input side of a reference profile, the endpoint keeps the
    input side of its window, and the monitor judges what it has (here: too little, no verdict)."""
    from bertops.model_store import registry_for
    from bertops.monitoring.monitor import monitor
    from bertops.monitoring.window import decode_arrays

    profile = registry_for(cfg, root).versions(cfg.package.model_name)[packaged.version]["reference_profile"]
    assert profile["rows"] > 0 and profile["tokens"]["p50"] > 2 and "label_shares" not in profile
    window = httpx.get(f"{url}/monitor/window", timeout=30).json()
    columns = decode_arrays(window["columns"])
    assert window["version"] == packaged.model_tag and len(columns["tokens"]) == len(sent)
    assert len(columns["label"]) == 0 and "embedding" not in columns  # the input side only
    result = monitor(cfg, root)
    assert result["report"]["verdict"] == "insufficient" and f"holds {len(sent)} inputs" in result["report"]["message"]


def missing_stage_outputs(cfg, root: Path, stages: list[str]) -> list[str]:
    """The outputs dvc.yaml declares for `stages` (its ${...} filled from the config) that are not in
    `root`. A task that leaves one out cannot be recorded as an experiment (DVC refuses to save a
    stage whose output is missing) and fails `dvc repro`, so every task writes all of them."""
    import re

    import yaml

    from tests.conftest import REPO

    tree = cfg.to_dict()

    def value(match: re.Match) -> str:
        node = tree
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = []
    for stage in stages:
        for kind in ("outs", "metrics", "plots"):
            for entry in declared[stage].get(kind) or []:
                path = re.sub(r"\$\{([^}]+)\}", value, entry if isinstance(entry, str) else next(iter(entry)))
                if not (root / path).exists():
                    missing.append(f"{stage}: {path}")
    return missing
