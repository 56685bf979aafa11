"""The same finetune and pretrain loops on Ray Train: two CPU workers (DDP over gloo), tiny configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import smoke_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance per test session, shut down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_two_ray_workers_train_and_save_one_model(ray_cluster, tmp_path: Path):
    from bertops.data.prepare import prepare
    from bertops.data.sources import ingest
    from bertops.data.validation import validate
    from bertops.training.run import train

    cfg = smoke_config(["finetune.num_workers=2", "finetune.epochs=1"])
    ingest(cfg, tmp_path)
    validate(cfg, tmp_path)
    prepare(cfg, tmp_path)
    result = train(cfg, tmp_path)
    assert result.world_size == 2 and result.device == "cpu"
    # 400 rows * 0.8 (validation carved out) / (16 per batch * 2 workers) = 10 steps per worker.
    assert result.steps == 10
    assert (tmp_path / "models/sst2/model.safetensors").is_file()
    lineage = json.loads((tmp_path / "models/sst2/lineage.json").read_text())
    assert lineage["metrics"]["world_size"] == 2
    assert ray_cluster.is_initialized()  # the adapter leaves a Ray it did not start running


def test_two_ray_workers_pretrain_one_model(ray_cluster, tmp_path: Path, datasets: Path):
    from bertops.pretraining.run import run_pretrain

    cfg = smoke_config([f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']", "pretrain.model=tiny",
                        "pretrain.vocab_size=2000", "pretrain.steps=6", "pretrain.batch_size=8",
                        "pretrain.max_length=64", "pretrain.log_every=3", "pretrain.progress=false",
                        "pretrain.num_workers=2"])
    metrics = run_pretrain(cfg, tmp_path)
    assert metrics["world_size"] == 2 and metrics["steps"] == 6 and metrics["heldout_examples"] > 0
    assert (tmp_path / "models/pretrained/wikitext2-mini/model.safetensors").is_file()
    assert ray_cluster.is_initialized()
