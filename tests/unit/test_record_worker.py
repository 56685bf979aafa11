"""The record worker, a process that does DVC's part of recording while the run goes on: DVC's
commit of each stage (the same dvc.lock and cache as the commit made at the end), DVC's refusals
reported, a worker that is gone handled by the caller's own commit, and the production model's run
read (on real git + DVC repositories with toy pipelines)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bertops import experiments
from bertops.record_worker import RecordWorker
from tests.unit.test_experiments import _run, toy_repo  # noqa: F401 - the fixture

GIT = ["git", "-c", "user.name=bertops-test", "-c", "user.email=test@localhost"]
PREPARE = "import yaml; p = yaml.safe_load(open('params.yaml'))['toy']; open('prepared.txt', 'w').write(str(p['rows']))"
TRAIN = "open('model.txt', 'w').write(open('prepared.txt').read() * 2)"


def _sh(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture()
def two_stages(tmp_path: Path) -> Path:
    """A git + DVC repository whose two stages (prepare -> train) have run but are not committed:
    what the direct executor leaves, stage by stage."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "params.yaml").write_text("toy:\n  rows: 3\n  other: 1\n")
    stages = {
        "prepare": {"cmd": f'{sys.executable} -c "{PREPARE}"', "params": ["toy.rows"], "outs": ["prepared.txt"]},
        "train": {"cmd": f'{sys.executable} -c "{TRAIN}"', "deps": ["prepared.txt"], "outs": ["model.txt"]},
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    _sh(["git", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    _sh(GIT + ["add", "-A"], root)
    _sh(GIT + ["commit", "-qm", "init"], root)
    for stage in ("PREPARE", "TRAIN"):
        _sh([sys.executable, "-c", globals()[stage]], root)
    return root


def test_the_worker_commits_as_the_commit_at_the_end_would(two_stages: Path, tmp_path: Path):
    root = two_stages
    at_the_end, in_one_pass = tmp_path / "at-the-end", tmp_path / "in-one-pass"
    shutil.copytree(root, at_the_end)
    shutil.copytree(root, in_one_pass)
    experiments.commit_stages(at_the_end, [None])  # repo.commit of every stage
    experiments.commit_stages(in_one_pass, ["prepare", "train", "prepare"])  # named stages, one dvc.lock rewrite
    assert (in_one_pass / "dvc.lock").read_text() == (at_the_end / "dvc.lock").read_text()

    with RecordWorker(root, None) as commits:
        commits.submit(["prepare"])  # returns at once; the next stage would run meanwhile
        commits.submit(["prepare"])  # a stage is sent once
        assert commits.finish(["prepare", "train"]) is True
        assert commits._batches == 2
        assert commits.committed and commits.problem is None
    assert (root / "dvc.lock").read_text() == (at_the_end / "dvc.lock").read_text()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "train"} and lock["stages"]["prepare"]["params"] == {
        "params.yaml": {"toy.rows": 3}
    }
    # outputs in the cache, workspace up to date, the run-cache written
    assert json.loads(_sh([sys.executable, "-m", "dvc", "status", "--json"], root)) == {}
    (root / "model.txt").unlink()
    _sh([sys.executable, "-m", "dvc", "checkout", "-q"], root)
    assert (root / "model.txt").read_text() == "33"
    assert any((root / ".dvc" / "cache" / "runs").rglob("*"))


def test_a_stage_dvc_refuses_is_reported_with_dvcs_message(two_stages: Path):
    root = two_stages
    (root / "model.txt").unlink()  # train's output is missing
    with RecordWorker(root, None) as commits:
        commits.submit(["prepare"])
        assert commits.finish(["prepare", "train"]) is False  # the caller commits, and says why
        assert any("model.txt" in reply.get("error", "") for reply in commits._replies)
        assert not commits.committed and commits.problem.startswith("its commit failed:")
        assert "model.txt" in commits.problem
    # so a run recorded with it is not recorded, with DVC's message
    with (
        RecordWorker(root, None) as commits,
        pytest.raises(experiments.ExperimentError, match="dvc commit failed.*model.txt"),
    ):
        experiments.record(root, "broken", ["prepare", "train"], commits)
    assert "broken" not in experiments._names(root)


def test_a_commit_that_failed_in_passing_is_made_again_by_the_record(two_stages: Path):
    """DVC's repository lock held by another `dvc` command while the worker commits: its commit
    fails, and the record, once the lock is free, commits in its own process and records."""
    from dvc.repo import Repo

    root = two_stages
    with RecordWorker(root, None) as commits:
        with Repo(str(root)) as repo, repo.lock:  # as `dvc status` in another terminal would
            assert commits.finish(["prepare", "train"]) is False
        rev = experiments.record(root, "retried", ["prepare", "train"], commits)
    assert experiments.find_run(root, "retried").rev == rev
    assert json.loads(_sh([sys.executable, "-m", "dvc", "status", "--json"], root)) == {}


def test_a_relative_root_is_the_same_workspace(two_stages: Path, monkeypatch):
    monkeypatch.chdir(two_stages.parent)
    with RecordWorker(Path(two_stages.name), None) as commits:
        assert commits.finish(["prepare", "train"]) is True
    assert json.loads(_sh([sys.executable, "-m", "dvc", "status", "--json"], two_stages)) == {}


@pytest.mark.timeout(120)  # the test holds the reader's lock: a mistake would hang rather than fail
def test_a_worker_that_is_gone_leaves_the_commit_to_the_caller(two_stages: Path):
    root = two_stages
    commits = RecordWorker(root, None)
    with commits._changed:  # its reader takes note of the end only once finish waits: the slower side
        commits._proc.kill()
        commits._proc.wait()
        commits.submit(["prepare"])  # refused: the worker's input is closed
        assert commits._batches == 0 and not commits._ended
        assert commits.finish(["prepare", "train"], timeout=30) is False
    assert commits.problem == "the worker process ended early or never started"
    commits.close()
    # the record commits in its own process instead, and the run is recorded all the same
    dead = RecordWorker(root, None)
    dead._proc.kill()
    rev = experiments.record(root, "fallback", ["prepare", "train"], dead)
    dead.close()
    assert experiments.find_run(root, "fallback").rev == rev
    assert json.loads(_sh([sys.executable, "-m", "dvc", "status", "--json"], root)) == {}


def test_ctrl_c_in_the_terminal_leaves_the_worker_to_the_run(two_stages: Path):
    """The worker has its own process group, so Ctrl-C in the terminal does not reach it, and it
    ignores SIGINT sent to it all the same: the run stops it itself, after the commit in flight,
    so a commit is never cut half way."""
    import os
    import signal

    with RecordWorker(two_stages, "any") as worker:
        assert os.getpgid(worker._proc.pid) != os.getpgid(0)
        worker.champion()  # answered: the worker is past setting its handlers
        assert worker._answered
        worker._proc.send_signal(signal.SIGINT)
        assert worker.finish(["prepare", "train"]) is True


def test_leaving_the_block_stops_the_worker(two_stages: Path):
    with RecordWorker(two_stages, None) as commits:
        proc = commits._proc
        assert proc.poll() is None
    assert proc.wait(5) is not None
    commits.submit(["prepare"])  # after the end: nothing sent, nothing raised
    assert commits._batches == 0


def test_the_worker_reads_the_production_models_run_while_the_stages_run(toy_repo: Path):  # noqa: F811
    root = toy_repo
    _run(root, 0.1, "first")
    with RecordWorker(root, "first") as worker:
        assert worker.champion() == experiments.find_run(root, "first")  # curves' (step, value) pairs too
    with RecordWorker(root, "not-recorded-here") as worker:
        assert worker.champion() is None and worker._answered  # the record task says why
    with RecordWorker(root, None) as worker:
        assert worker.champion(timeout=1) is None


def test_data_sources_are_committed_with_the_stages_that_read_them(two_stages: Path, tmp_path: Path):
    """A pipeline reading a `dvc add`ed file that changed since its last commit: the worker commits
    the new version of the file (its .dvc file and the cache) with the stages, as `dvc commit` of
    every stage and `dvc exp save` do."""
    root = two_stages
    (root / "raw.txt").write_text("one\n")
    _sh([sys.executable, "-m", "dvc", "add", "-q", "raw.txt"], root)
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    pipeline["stages"]["prepare"]["deps"] = ["raw.txt"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    _sh(GIT + ["add", "dvc.yaml", "raw.txt.dvc", ".gitignore"], root)  # not the stages' outputs
    _sh(GIT + ["commit", "-qm", "a data source"], root)
    (root / "raw.txt").write_text("two\n")  # a new version of the data, not `dvc add`ed again

    at_the_end = tmp_path / "at-the-end"
    shutil.copytree(root, at_the_end)
    experiments.commit_stages(at_the_end, [None])
    with RecordWorker(root, None) as commits:
        commits.submit(["prepare"])
        assert commits.finish(["prepare", "train"]) is True, commits.problem
    for name in ("dvc.lock", "raw.txt.dvc"):
        assert (root / name).read_text() == (at_the_end / name).read_text(), name
    assert "two" not in (root / "raw.txt.dvc").read_text()  # a hash, not the text: it changed
    assert (root / "raw.txt.dvc").read_text() != _sh(["git", "show", "HEAD:raw.txt.dvc"], root)
    assert json.loads(_sh([sys.executable, "-m", "dvc", "status", "--json"], root)) == {}
    (root / "raw.txt").unlink()
    _sh([sys.executable, "-m", "dvc", "checkout", "-q", "raw.txt.dvc"], root)
    assert (root / "raw.txt").read_text() == "two\n"


def test_stages_that_end_close_together_are_committed_in_one_pass(two_stages: Path):
    """package, then the short promote: requests that come within GATHER_S of each other share one
    commit pass (one dvc.lock rewrite); a final request is answered without that wait."""
    with RecordWorker(two_stages, None) as commits:
        commits.submit(["prepare"])
        commits.submit(["train"])  # microseconds later, well inside the 0.5 s the worker waits
        assert commits.finish(["prepare", "train"]) is True
        assert [reply["pass"] for reply in commits._replies] == [1, 1, 1]
    lock = yaml.safe_load((two_stages / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "train"}


def test_a_refused_request_is_not_waited_on_for_the_whole_timeout(two_stages: Path, monkeypatch):
    """A worker whose input refuses a request is gone, even when its output stays open (another
    process holding the pipe): finish reads what it wrote for REFUSED_GRACE_S, then says so."""
    from bertops import record_worker

    class Closed:
        def write(self, _):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(record_worker, "REFUSED_GRACE_S", 0.5)
    with RecordWorker(two_stages, None) as commits:
        stdin, commits._proc.stdin = commits._proc.stdin, Closed()  # the worker itself lives on
        started = time.monotonic()
        assert commits.finish(["prepare", "train"], timeout=60) is False
        assert time.monotonic() - started < 10
        assert commits.problem == "its input closed before it was sent every stage"
        commits._proc.stdin = stdin  # so that leaving the block ends it


def test_a_worker_that_does_not_answer_in_time_is_reported_so(two_stages: Path):
    """finish waits `timeout` s at most: a worker still busy (here: still importing DVC) is reported
    as silent, not as gone, and the caller commits; asked again, it answers."""
    with RecordWorker(two_stages, None) as commits:
        assert commits.committed is None  # nothing asked yet
        assert commits.finish(["prepare", "train"], timeout=0.01) is False
        assert commits.problem == "no answer in 0.01 s" and commits.committed is False
        assert commits._proc.poll() is None  # alive, and left to finish its commit
        assert commits.finish(["prepare", "train"]) is True and commits.problem is None
