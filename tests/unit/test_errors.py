"""Which failures a retry may fix is decided by type, never by wording: an error whose message
happens to contain "ray" (as in "array") or "connection" is not retried, a source or cluster that
could not be reached is, and the CLI says which with its exit status (75 = try again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertops.errors import (
    TRANSIENT_EXIT,
    BertopsError,
    ClusterUnreachable,
    ConfigError,
    PipelineError,
    is_transient,
)
from tests.conftest import smoke_config


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ValueError("could not broadcast array of shape (3,) into (4,)"), False),
        (ConfigError("the connection string in ingest.path is wrong"), False),
        (PipelineError("finetune", "Ray worker raised: array index out of range"), False),
        (FileNotFoundError("data/raw/sst2/train.tsv"), False),
        (PermissionError("models/"), False),
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("read timed out"), True),
        (OSError(101, "Network is unreachable"), True),
        (ClusterUnreachable("cannot reach the Ray cluster at RAY_ADDRESS='10.0.0.1:6379'"), True),
        (PipelineError("ingest", "the hub could not be reached", transient=True), True),
    ],
)
def test_transient_is_a_matter_of_type(error: BaseException, transient: bool):
    assert is_transient(error) is transient or (isinstance(error, PipelineError) and error.transient is transient)


def test_an_unreachable_hub_is_transient_and_the_cli_says_so(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from bertops.cli import app
    from bertops.data.ingest import ingest
    from bertops.data.sources import DataSourceError, SourceUnreachable

    cfg = smoke_config(["ingest.search_paths=[]", "ingest.hub_id=no-such-org/no-such-dataset"])
    with pytest.raises(DataSourceError) as failure:  # offline here: the hub is unreachable
        ingest(cfg, tmp_path)
    assert isinstance(failure.value, SourceUnreachable) and is_transient(failure.value)

    monkeypatch.chdir(tmp_path)
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            "--params",
            str(params),
            "-s",
            "ingest.search_paths=[]",
            "-s",
            "ingest.hub_id=no-such-org/no-such-dataset",
        ],
    )
    assert result.exit_code == TRANSIENT_EXIT, result.output
    bad = CliRunner().invoke(
        app, ["ingest", "--params", str(params), "-s", "ingest.search_paths=[]", "-s", "ingest.hub_id=null"]
    )
    assert bad.exit_code == 1 and "ingest.path" in bad.output  # nothing to retry: say what to pass


def test_every_user_error_shares_one_base():
    from bertops.data.sources import DataSourceError
    from bertops.data.validation import ValidationFailed
    from bertops.evaluation.gate import IncompleteReport
    from bertops.lineage import ArtifactMismatch
    from bertops.packaging import GateRejected
    from bertops.registry import RegistryError

    for kind in (
        ConfigError,
        DataSourceError,
        ValidationFailed,
        IncompleteReport,
        ArtifactMismatch,
        GateRejected,
        RegistryError,
        PipelineError,
    ):
        assert issubclass(kind, BertopsError), kind


def test_a_null_floor_is_off_as_documented():
    from bertops.evaluation.gate import decide

    cfg = smoke_config(["gate.min_accuracy=null", "gate.min_macro_f1=null", "gate.max_ece=null"])
    report = {
        "accuracy": 0.1,
        "macro_f1": 0.1,
        "ece": 0.9,
        "model_sha256": "x",
        "champion": None,
        "behaviour": None,
        "serving": {"model_size_mb": 90.0, "latency": {"p95_ms": 10.0}},
    }
    decision = decide(report, cfg.gate.model_copy(update={"min_behaviour_pass_rate": None}))
    assert decision.approved and [c.name for c in decision.checks] == ["p95 latency ms", "model size MB"]


def test_an_unreachable_registry_or_store_fails_the_cli_in_seconds_naming_the_url(tmp_path: Path, monkeypatch):
    import socket
    import time

    from typer.testing import CliRunner

    from bertops.cli import app
    from bertops.model_store import ModelStore, StoreError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BERTOPS_REGISTRY_URL", f"postgresql+psycopg://team:hunter2@127.0.0.1:{port}/bertops")
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    started = time.monotonic()
    for command in (["models", "list"], ["promote", "v1"], ["rollback"]):
        result = CliRunner().invoke(app, [*command, "--params", str(params)])
        assert result.exit_code == TRANSIENT_EXIT, result.output
        assert f"team:***@127.0.0.1:{port}/bertops" in result.output and "hunter2" not in result.output
    assert time.monotonic() - started < 30
    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be")
    store = ModelStore(str(tmp_path / "not-a-folder"), tmp_path / "cache")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_bytes(b"w")
    with pytest.raises(StoreError, match="cannot use the model store .*not-a-folder") as err:
        store.put("m", "v1", tmp_path / "model")
    assert is_transient(err.value)


def test_the_command_list_shows_each_summary_whole_on_its_line():
    """`bertops --help` lists each command with its docstring's first paragraph as one line (wrapped
    only at the terminal's width), not broken where the source wraps it."""
    from typer.testing import CliRunner

    from bertops.cli import app

    wide = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert wide.exit_code == 0, wide.output
    tune = next(line for line in wide.output.splitlines() if "│ tune " in line)
    assert "ASHA stops bad trials), scored on the validation slice only; the best is written as a profile" in tune
    runs = CliRunner().invoke(app, ["runs", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    compare = next(line for line in runs.output.splitlines() if "│ compare " in line)
    assert "the metrics (B - A), both training curves (sparklines here" in compare
