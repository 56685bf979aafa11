"""Runs recorded as DVC experiments and compared: params.yaml holding a run's values (and given back),
where recording is possible, and save / list / find / compare on a real git + DVC repository with
a toy two-stage pipeline (the retrain flow itself is recorded in tests/e2e/test_dvc_pipeline.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bertops import experiments
from bertops.cli import app
from bertops.config import load_config
from tests.conftest import REPO

GIT = ["git", "-c", "user.name=bertops-test", "-c", "user.email=test@localhost"]


def _sh(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_params_yaml_holds_the_runs_values_then_its_own_text_again(tmp_path: Path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    original = (tmp_path / "params.yaml").read_text()
    # a profile that replaces dicts with fewer keys, strings PyYAML would misread, a float without a dot
    config = load_config(
        REPO / "params.yaml",
        REPO / "configs" / "rte.yaml",
        ["finetune.lr=3e-5", "gate.min_behaviour_pass_rate=null", "evaluate.slices={neg: {keywords: ['no', 'off']}}"],
    )
    with experiments.params_applied(tmp_path, config) as changed:
        written = (tmp_path / "params.yaml").read_text()
        assert load_config(tmp_path / "params.yaml").to_dict() == config.to_dict()
        assert "finetune.lr" in changed and "ingest.dataset" in changed and "paths.raw" not in changed
        assert "# name of the corpus" in written  # comments kept
        assert isinstance(yaml.safe_load(written)["finetune"]["lr"], float)
    assert (tmp_path / "params.yaml").read_text() == original
    # given back after a failure too; a run with params.yaml's own values writes nothing
    with pytest.raises(RuntimeError), experiments.params_applied(tmp_path, config):
        raise RuntimeError("a stage failed")
    assert (tmp_path / "params.yaml").read_text() == original
    with experiments.params_applied(tmp_path, load_config(tmp_path / "params.yaml")) as changed:
        assert changed == []


def test_where_runs_cannot_be_recorded_says_what_to_do(tmp_path: Path):
    assert "git init" in experiments.workspace_problem(tmp_path)
    _sh(["git", "init", "-q"], tmp_path)
    assert "no commit yet" in experiments.workspace_problem(tmp_path)
    (tmp_path / "x").write_text("x")
    _sh(GIT + ["add", "-A"], tmp_path)
    _sh(GIT + ["commit", "-qm", "x"], tmp_path)
    assert "dvc init" in experiments.workspace_problem(tmp_path)
    with pytest.raises(experiments.ExperimentError, match="git init|dvc init"):
        experiments.list_runs(tmp_path)


STAGE = (
    "import json, os, yaml; p = yaml.safe_load(open('params.yaml'))['toy']; "
    "os.makedirs('reports/finetune', exist_ok=True); os.makedirs('reports/evaluate', exist_ok=True); "
    "json.dump({'best_validation_accuracy': 0.5 + p['lr'], 'train_seconds': 3}, open('reports/finetune/metrics.json', 'w')); "  # noqa: E501
    "open('reports/finetune/validation.csv', 'w').write('step,validation_accuracy\\n1,0.5\\n2,' + str(0.5 + p['lr']) + '\\n'); "  # noqa: E501
    "open('reports/finetune/train_loss.csv', 'w').write('step,train_loss,lr\\n1,0.7,0.1\\n'); "
    "json.dump({'accuracy': 0.4 + p['lr'], 'slices': {'short': {'accuracy': 0.3}}}, open('reports/evaluate/metrics.json', 'w'))"  # noqa: E501
)


@pytest.fixture()
def toy_repo(tmp_path: Path) -> Path:
    """A git + DVC repository whose pipeline writes the files runs are read from."""
    root = tmp_path / "toy"
    root.mkdir()
    (root / "params.yaml").write_text("toy:\n  lr: 0.1  # the step size\n  epochs: 2\n")
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "train": {
                        "cmd": f'{sys.executable} -c "{STAGE}"',
                        "params": ["toy.lr", "toy.epochs"],
                        "metrics": ["reports/finetune/metrics.json", "reports/evaluate/metrics.json"],
                        "plots": ["reports/finetune/validation.csv", "reports/finetune/train_loss.csv"],
                    }
                }
            }
        )
    )
    (root / ".gitignore").write_text("/reports/\n")
    _sh(["git", "init", "-q"], root)
    _sh([sys.executable, "-m", "dvc", "init", "-q"], root)
    _sh(GIT + ["add", "-A"], root)
    _sh(GIT + ["commit", "-qm", "init"], root)
    return root


def _run(root: Path, lr: float, name: str) -> str:
    params = root / "params.yaml"
    params.write_text(params.read_text().replace(params.read_text().split("lr: ")[1].split(" ")[0], str(lr), 1))
    _sh([sys.executable, "-m", "dvc", "repro", "-q"], root)
    return experiments.record(root, experiments.unique_name(root, name), ["train"])


def test_runs_are_saved_listed_found_and_compared(toy_repo: Path, monkeypatch):
    root = toy_repo
    assert experiments.workspace_problem(root) is None
    first = _run(root, 0.1, "first")
    second = _run(root, 0.3, "second")
    assert experiments.unique_name(root, "first") == "first-2"  # runs are never overwritten
    with pytest.raises(experiments.ExperimentError, match="exists already"):
        experiments.record(root, "first", ["train"])
    # what DVC users see: dvc exp show lists both, with their params and metrics
    shown = json.dumps(json.loads(_sh([sys.executable, "-m", "dvc", "exp", "show", "--json"], root)))
    assert '"first"' in shown and '"second"' in shown

    runs = experiments.list_runs(root)
    assert [r.name for r in runs] == ["second", "first"] and runs[0].rev == second and runs[1].rev == first
    assert [r.name for r in experiments.list_runs(root, limit=1)] == ["second"]  # only the newest is read
    assert runs[1].params["toy.lr"] == 0.1 and runs[0].params["toy.lr"] == 0.3
    assert runs[0].metrics["evaluate.accuracy"] == pytest.approx(0.7)
    assert runs[0].metrics["evaluate.slices.short.accuracy"] == pytest.approx(0.3)
    assert runs[0].metrics["finetune.best_validation_accuracy"] == pytest.approx(0.8)
    assert runs[0].curves["validation_accuracy"] == [(1, 0.5), (2, pytest.approx(0.8))]
    assert runs[0].baseline == _sh(["git", "rev-parse", "HEAD"], root).strip()

    found = experiments.find_run(root, second[:8])
    assert found.name == "second"
    # what the flow reads right after recording (the working tree) is what the commit holds
    assert experiments.workspace_run(root, "second", second) == found
    with pytest.raises(experiments.ExperimentError, match="not a recorded run"):
        experiments.workspace_run(root, "second", first)
    with pytest.raises(experiments.ExperimentError, match="first, second"):
        experiments.find_run(root, "third")

    comparison = experiments.compare(runs[1], runs[0])
    assert comparison.params == [("toy.lr", 0.1, 0.3)]
    markdown = experiments.comparison_markdown(comparison)
    assert "| toy.lr | 0.1 | 0.3 |" in markdown and "| evaluate.accuracy | 0.5 | 0.7 | +0.2000 |" in markdown
    table = experiments.runs_table(runs)
    assert table.splitlines()[0].startswith("| run | created | commit | data | toy.lr |")
    png = experiments.plot_comparison(comparison, root / "reports" / "runs" / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"

    # the CLI, run in the workspace like a user would
    monkeypatch.chdir(root)
    listed = CliRunner().invoke(app, ["runs"])
    assert listed.exit_code == 0 and "second" in listed.output and "first" in listed.output, listed.output
    compared = CliRunner().invoke(app, ["runs", "compare", "first", "second", "--params", str(REPO / "params.yaml")])
    assert compared.exit_code == 0 and "| toy.lr | 0.1 | 0.3 |" in compared.output, compared.output
    unknown = CliRunner().invoke(app, ["runs", "compare", "nope", "second", "--params", str(REPO / "params.yaml")])
    assert unknown.exit_code == 1 and "'nope' is not a recorded run" in unknown.output
    same = CliRunner().invoke(app, ["runs", "compare", "second", second[:8], "--params", str(REPO / "params.yaml")])
    assert same.exit_code == 0 and "nothing to compare: A and B are the same run, second" in same.output, same.output
    assert "| toy.lr |" not in same.output and not (root / "reports" / "runs" / "second-vs-second.png").exists()
    newest = CliRunner().invoke(app, ["runs", "compare", "second", "--params", str(REPO / "params.yaml")])  # B: newest
    assert newest.exit_code == 0 and "the same run, second; name two runs" in newest.output, newest.output


def test_the_cli_outside_a_git_dvc_workspace_exits_1_with_the_way_out(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["runs"])
    assert result.exit_code == 1 and "git init && dvc init" in result.output, result.output


def test_a_run_made_outside_dvc_is_recorded_as_dvc_would_have(toy_repo: Path):
    """The direct executor's case: the stage ran in this process, not through `dvc repro`, and no
    dvc.lock exists yet. The record holds dvc.lock, and with the run applied DVC finds the stage up
    to date: what `dvc exp run -S toy.lr=0.2` would have left."""
    root = toy_repo
    original = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(original.replace("lr: 0.1", "lr: 0.2"))
    subprocess.run([sys.executable, "-c", STAGE], cwd=root, check=True)  # the stage, outside DVC
    assert not (root / "dvc.lock").exists()
    rev = experiments.record(root, "outside", ["train"])
    (root / "params.yaml").write_text(original)  # the flow gives params.yaml back
    assert "dvc.lock" in _sh(["git", "ls-tree", "--name-only", rev], root).split()
    assert experiments.find_run(root, "outside").metrics["evaluate.accuracy"] == pytest.approx(0.6)
    _sh([sys.executable, "-m", "dvc", "exp", "apply", "outside"], root)
    assert "lr: 0.2" in (root / "params.yaml").read_text()
    assert json.loads(_sh([sys.executable, "-m", "dvc", "status", "--json"], root)) == {}


def test_the_experiment_commit_leaves_head_the_branch_and_the_index_alone(toy_repo: Path, monkeypatch):
    """The record is made with git itself: the run's tracked files as they stand (staged or not) and
    dvc.lock, on top of HEAD, under DVC's ref; HEAD, the branch and the user's index do not move, and
    a machine without a git identity still records (as bertops)."""
    root = toy_repo
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(root / "no-such-gitconfig"))  # no user.name anywhere
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    head = _sh(["git", "rev-parse", "HEAD"], root).strip()
    (root / "notes.txt").write_text("staged\n")
    _sh(["git", "add", "notes.txt"], root)
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("lr: 0.1", "lr: 0.25"))
    (root / "stray.txt").write_text("untracked: not part of the run\n")
    _sh([sys.executable, "-m", "dvc", "repro", "-q"], root)
    staged_before = _sh(["git", "diff", "--cached", "--name-only"], root)

    rev = experiments.record(root, "plain", ["train"])

    assert _sh(["git", "rev-parse", "HEAD"], root).strip() == head
    assert _sh(["git", "diff", "--cached", "--name-only"], root) == staged_before  # the user's index as it was
    assert _sh(["git", "rev-parse", f"refs/exps/{head[:2]}/{head[2:]}/plain"], root).strip() == rev
    assert _sh(["git", "rev-list", "--parents", "-n", "1", rev], root).split() == [rev, head]
    files = set(_sh(["git", "ls-tree", "-r", "--name-only", rev], root).split())
    assert {"notes.txt", "params.yaml", "dvc.lock", "dvc.yaml"} <= files and "stray.txt" not in files
    assert "lr: 0.25" in _sh(["git", "show", f"{rev}:params.yaml"], root)
    assert _sh(["git", "log", "-1", "--format=%an <%ae>", rev], root).strip() == "bertops <bertops@localhost>"
    # DVC sees it as one of its experiments
    assert "plain" in _sh([sys.executable, "-m", "dvc", "exp", "ls"], root)
    assert experiments.find_run(root, "plain").params["toy.lr"] == 0.25
    # a run that took the name between the check and the commit is never overwritten: git refuses
    with pytest.raises(experiments.ExperimentError, match="exists already"):
        experiments._commit_experiment(root, "plain", ["dvc.lock"])
    assert _sh(["git", "rev-parse", f"refs/exps/{head[:2]}/{head[2:]}/plain"], root).strip() == rev


def test_top_level_plots_named_by_an_id_are_saved_with_the_run(toy_repo: Path):
    """dvc.yaml's top-level plots may be a file, or an id whose x/y map files to fields: the files
    are saved with the run even when git ignores them, as `dvc exp save` does; an id is no file,
    even when a folder has its name."""
    root = toy_repo
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    pipeline["plots"] = [
        "reports/curves/loss.csv",
        {"accuracy": {"x": "step", "y": {"reports/curves/a.csv": "acc", "reports/curves/b.csv": "acc"}}},
        {"reports/curves/b.csv": {"y": "acc"}},  # the same file again, as a plot of its own
    ]
    pipeline["plots"].append({"reports": {"x": "step", "y": {"reports/curves/loss.csv": "acc"}}})  # an id only
    assert experiments._top_level_paths(pipeline) == [
        "reports/curves/loss.csv", "reports/curves/a.csv", "reports/curves/b.csv"
    ]  # fmt: skip
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    _sh(GIT + ["commit", "-qam", "plots"], root)
    (root / "reports" / "curves").mkdir(parents=True)
    for name in ("loss", "a", "b"):
        (root / "reports" / "curves" / f"{name}.csv").write_text(f"step,acc\n1,0.{len(name)}\n")
    (root / "reports" / "big.bin").write_bytes(b"a DVC output git ignores")  # under the id "reports"
    rev = _run(root, 0.2, "curves")
    files = set(_sh(["git", "ls-tree", "-r", "--name-only", rev], root).split())
    assert {"reports/curves/loss.csv", "reports/curves/a.csv", "reports/curves/b.csv"} <= files
    # an id is never a path, even when a folder has its name: what git ignores there stays out
    assert "reports/big.bin" not in files and not any(f.startswith("reports/finetune/") for f in files)


def test_the_collector_is_paused_for_dvcs_commit_only_and_always_given_back():
    import gc

    assert gc.isenabled()
    with experiments._gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), experiments._gc_paused():  # given back after a failed commit too
        raise RuntimeError("dvc commit failed")
    assert gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    try:
        with experiments._gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
