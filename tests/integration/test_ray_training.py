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
    from bertops.data.ingest import ingest
    from bertops.data.prepare import prepare
    from bertops.data.validation import validate
    from bertops.training.finetune import finetune

    cfg = smoke_config(["finetune.num_workers=2", "finetune.epochs=1"])
    ingest(cfg, tmp_path)
    validate(cfg, tmp_path)
    train_rows = prepare(cfg, tmp_path).rows["train"]
    result = finetune(cfg, tmp_path)
    assert result.world_size == 2 and result.device == "cpu"
    # The workers read the corpus from their node-local copy (shipped through the object store).
    for rank in (0, 1):
        worker = json.loads((tmp_path / f"reports/finetune/workers/rank-{rank}.json").read_text())
        assert not worker["data"].startswith(str(tmp_path)) and Path(worker["data"], "sst2", "train.parquet").is_file()
    # ~320 train rows (400 less the validation slice) / (16 per batch * 2 workers): 9-10 steps per worker.
    assert 300 <= train_rows <= 330 and result.steps == train_rows // 32
    assert (tmp_path / "models/sst2/model.safetensors").is_file()
    lineage = json.loads((tmp_path / "models/sst2/lineage.json").read_text())
    assert lineage["metrics"]["world_size"] == 2
    assert ray_cluster.is_initialized()  # the adapter leaves a Ray it did not start running


def test_distillation_runs_on_two_ray_workers(ray_cluster, trained_workspace, tmp_path: Path):
    import shutil

    from bertops.training.distill import run_distill

    source, _, _ = trained_workspace
    for rel in ("data/raw/sst2", "data/prepared/sst2", "reports/validate", "models/sst2"):
        shutil.copytree(source / rel, tmp_path / rel)
    result = run_distill(smoke_config(["distill.num_workers=2", "distill.student_layers=2"]), tmp_path)
    assert result.world_size == 2 and result.steps > 0
    lineage = json.loads((tmp_path / "models/sst2-student/lineage.json").read_text())
    assert lineage["stage"] == "distill" and lineage["metrics"]["world_size"] == 2
    assert (
        lineage["teacher"]["model_sha256"]
        == json.loads((tmp_path / "models/sst2/lineage.json").read_text())["model_sha256"]
    )


def test_two_ray_workers_pretrain_one_model(ray_cluster, tmp_path: Path, datasets: Path):
    from bertops.pretraining.run import run_pretrain

    cfg = smoke_config(
        [
            f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']",
            "pretrain.model=tiny",
            "pretrain.vocab_size=2000",
            "pretrain.steps=6",
            "pretrain.batch_size=8",
            "pretrain.max_length=64",
            "pretrain.log_every=3",
            "pretrain.progress=false",
            "pretrain.num_workers=2",
        ]
    )
    metrics = run_pretrain(cfg, tmp_path)
    assert metrics["world_size"] == 2 and metrics["steps"] == 6 and metrics["heldout_examples"] > 0
    assert (tmp_path / "models/pretrained/wikitext2-mini/model.safetensors").is_file()
    assert ray_cluster.is_initialized()


def test_a_killed_worker_is_restarted_and_pretraining_resumes(ray_cluster, tmp_path: Path, datasets: Path):
    import os
    import signal
    import threading
    import time

    from bertops.pretraining.run import prepare_pretraining, run_pretrain

    cfg = smoke_config(
        [
            f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']",
            "pretrain.model=tiny",
            "pretrain.vocab_size=2000",
            "pretrain.steps=60",
            "pretrain.batch_size=8",
            "pretrain.max_length=64",
            "pretrain.log_every=10",
            "pretrain.checkpoint_every=10",
            "pretrain.progress=false",
            "pretrain.num_workers=2",
        ]
    )
    prepare_pretraining(cfg, tmp_path)
    state = tmp_path / "models/.checkpoints/pretrain-wikitext2-mini/state.pt"
    rank1 = tmp_path / "reports/pretrain/workers/rank-1.json"
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(metrics=run_pretrain(cfg, tmp_path)))
    runner.start()
    deadline = time.monotonic() + 300
    while not (state.is_file() and rank1.is_file()) and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.is_file(), "no checkpoint before the run ended"
    killed = json.loads(rank1.read_text())["pid"]
    os.kill(killed, signal.SIGKILL)
    runner.join(600)
    metrics = outcome["metrics"]
    assert metrics["steps"] == 60 and metrics["resumed_from_step"] >= 10
    assert json.loads(rank1.read_text())["pid"] != killed  # a new worker process took rank 1
    assert not state.exists()


def test_pretraining_spans_a_two_node_ray_cluster(tmp_path: Path, datasets: Path):
    """Two Ray nodes on this machine (a head and a second node, 1 CPU each), one worker per node,
    driven through RAY_ADDRESS-style connection in its own process; both nodes must have trained."""
    import subprocess
    import sys

    from tests.conftest import REPO

    overrides = [
        f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']",
        "pretrain.model=tiny",
        "pretrain.vocab_size=2000",
        "pretrain.steps=6",
        "pretrain.batch_size=8",
        "pretrain.max_length=64",
        "pretrain.log_every=3",
        "pretrain.progress=false",
        "pretrain.num_workers=2",
    ]
    script = f"""
import json
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
from tests.conftest import smoke_config
from bertops.pretraining.run import run_pretrain
metrics = run_pretrain(smoke_config({overrides!r}), Path({str(tmp_path)!r}))
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
ray.shutdown()
cluster.shutdown()
print("RESULT " + json.dumps({{"nodes": nodes, "world_size": metrics["world_size"], "steps": metrics["steps"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert len(result["nodes"]) == 2 and result["world_size"] == 2 and result["steps"] == 6
    workers = [json.loads((tmp_path / f"reports/pretrain/workers/rank-{r}.json").read_text()) for r in (0, 1)]
    assert {w["node_id"] for w in workers} == set(result["nodes"])  # one worker on each node
    from transformers import BertForPreTraining

    BertForPreTraining.from_pretrained(tmp_path / "models/pretrained/wikitext2-mini")  # a valid checkpoint


def test_a_killed_driver_resumes_pretraining_when_started_again(tmp_path: Path, datasets: Path):
    """`bertops pretrain` on a Ray worker; the driver (and the local Ray it started: the machine
    "crashed") is SIGKILLed after a checkpoint; the same command again resumes instead of starting over."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    command = [
        str(Path(sys.executable).with_name("bertops")),
        "pretrain",
        "--params",
        str(REPO / "params.yaml"),
        "-s",
        f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']",
        "-s",
        "pretrain.model=tiny",
        "-s",
        "pretrain.vocab_size=2000",
        "-s",
        "pretrain.steps=80",
        "-s",
        "pretrain.batch_size=8",
        "-s",
        "pretrain.max_length=64",
        "-s",
        "pretrain.log_every=10",
        "-s",
        "pretrain.checkpoint_every=10",
        "-s",
        "pretrain.progress=false",
        "-s",
        "pretrain.num_workers=1",
        "-s",
        "pretrain.num_threads=1",
    ]
    env = {**os.environ, "RAY_ADDRESS": ""}
    state = tmp_path / "models/.checkpoints/pretrain-wikitext2-mini/state.pt"
    driver = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not state.is_file() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.is_file(), "no checkpoint before the run ended"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
    driver.wait()
    assert not (tmp_path / "models/pretrained/wikitext2-mini/model.safetensors").exists()

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads((tmp_path / "reports/pretrain/metrics.json").read_text())
    assert metrics["steps"] == 80 and metrics["resumed_from_step"] >= 10
    assert (tmp_path / "models/pretrained/wikitext2-mini/model.safetensors").is_file() and not state.exists()
