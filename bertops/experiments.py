"""Every run an experiment, and any two runs compared.

A `bertops run` in a git + DVC workspace is saved as a DVC experiment (what `dvc exp save` would
make, the record `dvc exp show` lists): params.yaml as the run used it, the dvc.lock of the stages
it ran (the corpus version, code and outputs by hash; the metrics and training curves in the DVC
cache), on top of the commit it started from. With overrides or a profile, the run's values are
written into params.yaml for the record (comments kept, the way `dvc exp run -S` does) and the file
is put back afterwards; `dvc exp apply NAME` brings a run's params and outputs back into the workspace.

Reading runs back needs git and DVC only: `list_runs`, `find_run`, `compare` and the renderers
serve `bertops runs` and the flow's comparison artifact.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import chdir, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from bertops.config import Config
from bertops.errors import BertopsError

PARAMS_FILE = "params.yaml"
RUN_ENV = "BERTOPS_RUN"  # the recorded run's name while it runs (models' lineage carries it)
# The metrics files a run is compared on (relative to paths.reports), each cached by DVC.
METRICS = ("evaluate/metrics.json", "finetune/metrics.json")
CURVES = {"validation_accuracy": "finetune/validation.csv", "train_loss": "finetune/train_loss.csv"}
# What `bertops runs` shows per run, when present (the task's headline figures first).
HEADLINE = (
    "evaluate.accuracy",
    "evaluate.macro_f1",
    "evaluate.entity_f1",
    "evaluate.f1",
    "evaluate.exact_match",
    "finetune.best_validation_accuracy",
    "finetune.train_seconds",
)


class ExperimentError(BertopsError):
    """Runs cannot be recorded or read here (not a git + DVC workspace, an unknown run, ...)."""


@dataclass
class Run:
    name: str
    rev: str  # the experiment's commit
    baseline: str  # the git commit the run started from
    created: str  # ISO 8601
    params: dict[str, Any]  # params.yaml flattened: "finetune.lr" -> 3e-05
    metrics: dict[str, float]  # "evaluate.accuracy" -> 0.9, "finetune.train_seconds" -> ...
    data_version: str | None  # the md5 DVC recorded for the ingested corpus
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name -> [(step, value)]


def _git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExperimentError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip()[:300]}")
    return proc.stdout


def workspace_problem(root: Path) -> str | None:
    """Why runs cannot be recorded in `root` (None when they can): it must be a git repository with
    a first commit, holding DVC (`dvc init`) and a dvc.yaml."""
    root = Path(root)
    if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True).returncode:
        inside = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True).returncode == 0
        return (
            "the git repository has no commit yet (git add -A && git commit)"
            if inside
            else "not a git repository (git init && dvc init && git add -A && git commit)"
        )
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip())
    if top.resolve() != root.resolve():
        return f"{root} is not the top of its git repository ({top}); run from the repository root"
    if not (root / ".dvc").is_dir():
        return "DVC is not initialised here (dvc init && git commit -m 'dvc init')"
    if not (root / "dvc.yaml").is_file():
        return "no dvc.yaml here: the pipeline's stages are what a run records"
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name) if isinstance(value, dict) and value else {name: value})
    return out


def _overlay(node: Any, wanted: dict, base: dict, prefix: str, changed: list[str]) -> None:
    """Write into the round-trip YAML `node` the values of `wanted` that differ from `base` (what
    params.yaml means now); a dict whose keys differ is replaced whole, so no stale key stays."""
    for key, value in wanted.items():
        name = f"{prefix}{key}"
        old = base.get(key, object())
        if isinstance(value, dict) and isinstance(old, dict) and set(value) == set(old) and key in node:
            _overlay(node[key], value, old, f"{name}.", changed)
        elif value != old:
            node[key] = _plain(value)
            changed.append(name)


def _float(representer, value: float):
    """Floats as PyYAML reads them back as floats: 3e-05 needs its dot (3.0e-05)."""
    text = repr(value)
    if value != value or value in (float("inf"), float("-inf")):
        text = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[text]
    elif "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _plain(value: Any) -> Any:
    """A value ruamel writes so that PyYAML (YAML 1.1, what bertops reads with) reads it back the
    same: strings such as "no", "on" or "1e-5" quoted."""
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and yaml.safe_load(value) != value:
        return DoubleQuotedScalarString(value)
    return value


@contextmanager
def params_applied(root: Path, config: Config) -> Iterator[list[str]]:
    """params.yaml holds the run's values while the block runs (comments and order kept), then its
    own text again. Yields the dotted keys that differ (empty: params.yaml already is the run)."""
    from ruamel.yaml import YAML

    from bertops.config import load_config

    path = Path(root) / PARAMS_FILE
    original = path.read_text()
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    rt.representer.add_representer(float, _float)
    tree = rt.load(original)
    changed: list[str] = []
    _overlay(tree, config.to_dict(), load_config(path).to_dict(), "", changed)
    if changed:
        buffer = io.StringIO()
        rt.dump(tree, buffer)
        path.write_text(buffer.getvalue())
    try:
        yield changed
    finally:
        if changed:
            path.write_text(original)


class StageCommits(Protocol):
    """DVC's commit of a run's stages made while it runs (`bertops.record_worker.RecordWorker`)."""

    def finish(self, stages: list[str]) -> bool:
        """Commit what is left of `stages` and wait: True when all are committed; False when the
        caller must commit them (the worker is gone, or one of its commits failed)."""
        ...


def record(root: Path, name: str, stages: list[str], commits: StageCommits | None = None) -> str:
    """Save the workspace as the experiment `name` and return its commit: `stages` (those this run ran
    or found up to date) are committed to the DVC cache and dvc.lock as they stand (`dvc commit`,
    run-cache included), then the workspace is committed on top of the commit the run started from,
    under the ref `dvc exp save` would use (refs/exps/<baseline[:2]>/<baseline[2:]>/<name>), so
    `dvc exp show`, `dvc exp apply` and `dvc exp push` treat it as theirs.

    With `commits`, DVC's commit was made stage by stage while the run went on, and only what is
    left is waited for here; without it, or when it could not, the commit is made here. The
    experiment's git commit is made with git itself (a private index, `commit-tree`, a create-only
    `update-ref`) rather than through `dvc exp save`, whose stash and executor machinery cost ~0.5 s
    more on the smoke run for the same commit (bench/RESULTS.md)."""
    root = Path(root)
    problem = workspace_problem(root)
    if problem:
        raise ExperimentError(f"the run cannot be recorded: {problem}")
    if name in _names(root):
        raise _taken(name)
    pipeline = _pipeline(root)
    if commits is None or not commits.finish(stages):
        from dvc.exceptions import DvcException

        # all stages in one pass over dvc.yaml and dvc.lock when the run reached them all
        every = set(pipeline.get("stages") or {}) <= set(stages)
        try:
            commit_stages(root, [None] if every else list(stages))
        except DvcException as exc:
            raise ExperimentError(f"dvc commit failed: {exc}") from None
    return _commit_experiment(root, name, ["dvc.lock", *_top_level_paths(pipeline)])


def commit_stages(root: Path, targets: list[str | None], sources: bool = True) -> None:
    """`dvc commit --force` of `targets` in the DVC repository at `root` (stage names; None: every
    stage), run-cache included, the workspace's files left in place (no relink). With `sources`,
    first the data sources (`dvc add`) each named stage reads, as `dvc exp save` does. Raises DVC's
    own exceptions.

    Named stages are committed in one pass, as `repo.commit(None)` commits all stages: one read and
    one rewrite of dvc.lock for them all, where a `repo.commit` per stage rewrites it each time
    (five stages: 0.76 s against 1.78 s on this machine)."""
    from dvc.repo import Repo, lock_repo

    with _gc_paused(), chdir(root), Repo(".") as repo:
        if None in targets:
            repo.commit(None, force=True, relink=False)
            return
        with lock_repo(repo):  # what repo.commit holds; the stage index is built once
            if sources:
                for target in targets:
                    repo.commit(target, with_deps=True, data_only=True, force=True, allow_missing=True, relink=False)
            stages: dict[str, Any] = {}  # the body of dvc.repo.commit.commit, all targets at once
            for target in targets:
                for info in repo.stage.collect_granular(target):
                    if info.stage.addressing in stages:
                        continue
                    info.stage.save()
                    info.stage.commit(filter_info=info.filter_info, relink=False)
                    stages[info.stage.addressing] = info.stage
            by_file: dict[str, tuple[Any, list]] = {}
            for stage in stages.values():
                by_file.setdefault(stage.dvcfile.path, (stage.dvcfile, []))[1].append(stage)
            for dvcfile, group in by_file.values():
                dvcfile.dump_stages(group, update_pipeline=False)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic collector off for the block. DVC's commit makes ~10^6 short-lived objects
    (YAML nodes); in a flow's process, which holds a model, torch and Prefect, the collector's full
    passes over that heap cost as much as the commit's own work (the record task on the smoke run:
    1.4 s against 2.0 s, measured). Reference counting still frees what the commit drops."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _pipeline(root: Path) -> dict:
    """dvc.yaml as data (read with libyaml: a tenth of DVC's own read)."""
    return _yaml((root / "dvc.yaml").read_text(encoding="utf-8"))


def _top_level_paths(pipeline: dict) -> list[str]:
    """The files dvc.yaml's top-level metrics, params and plots name (`dvc exp save` adds them even
    when git does not track them). A plot is named by its file, or, as DVC reads it, by an id when
    its `y` maps files to fields: `{loss: {x: step, y: {reports/a.csv: loss}}}` names
    reports/a.csv (and `x`'s files when `x` is such a map too), never a file called `loss`."""
    paths: list[str] = []
    for key in ("metrics", "params", "plots"):
        for entry in pipeline.get(key) or []:
            if isinstance(entry, str):
                paths.append(entry)
            elif isinstance(entry, dict):
                for name, spec in entry.items():
                    if not isinstance(spec, dict) or not isinstance(spec.get("y"), dict):
                        paths.append(name)  # the key is the file
                        continue
                    paths.extend(spec["y"])  # the key is an id: the files are y's (and x's)
                    if isinstance(spec.get("x"), dict):
                        paths.extend(spec["x"])
    return list(dict.fromkeys(p for p in paths if isinstance(p, str)))


_NO_REF = "0" * 40  # update-ref's "must not exist yet"


def _commit_experiment(root: Path, name: str, extra: list[str]) -> str:
    """Commit the working tree (the tracked files as they stand, plus `extra` where present) on top of
    HEAD under the experiment's ref, without touching HEAD, the branch or the user's index."""
    import os
    import shutil
    import tempfile

    baseline = _git(root, "rev-parse", "HEAD").strip()
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    index = Path(_git(root, "rev-parse", "--git-path", "index").strip())
    index = index if index.is_absolute() else root / index
    with tempfile.TemporaryDirectory(prefix="bertops-exp-") as tmp:
        private = Path(tmp) / "index"
        if index.is_file():  # the user's index: staged changes kept, git's stat cache reused; its mtime
            # kept too, or git would trust stat data of files changed in the second the index was written
            shutil.copy2(index, private)
        env = {**os.environ, "GIT_INDEX_FILE": str(private), **_identity(root)}
        if not index.is_file():
            _git(root, "read-tree", "HEAD", env=env)
        _git(root, "add", "-u", env=env)
        present = [p for p in extra if (root / p).exists()]
        if present:
            _git(root, "add", "-f", "--", *present, env=env)
        tree = _git(root, "write-tree", env=env).strip()
        message = f"bertops: run {name}\n\nrecorded by bertops run"
        commit = _git(root, "commit-tree", tree, "-p", baseline, "-m", message, env=env).strip()
    try:
        _git(root, "update-ref", ref, commit, _NO_REF)
    except ExperimentError:
        if name in _names(root):  # another run took the name between the check in record and now
            raise _taken(name) from None
        raise
    return commit


def _taken(name: str) -> ExperimentError:
    return ExperimentError(f"an experiment named {name!r} exists already; runs are never overwritten")


def _identity(root: Path) -> dict[str, str]:
    """Who commits the experiment: git's configured user, else bertops (a CI machine or a fresh
    container often has no user.name, which `git commit-tree` would refuse)."""
    env: dict[str, str] = {}
    for key, var in (("user.name", "NAME"), ("user.email", "EMAIL")):
        proc = subprocess.run(["git", "config", key], cwd=root, capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            fallback = "bertops" if var == "NAME" else "bertops@localhost"
            env |= {f"GIT_AUTHOR_{var}": fallback, f"GIT_COMMITTER_{var}": fallback}
    return env


def unique_name(root: Path, wanted: str) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`... when a run of that name exists (git ref rules kept)."""
    import re

    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", wanted).strip("-.") or "run"
    taken = _names(root)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def _names(root: Path) -> set[str]:
    return {name for name, _, _ in _listed(root)}


def _listed(root: Path) -> list[tuple[str, str, str]]:
    """(name, experiment commit, baseline commit) of every saved run, newest first, from all commits:
    the git refs DVC keeps them under (refs/exps/<baseline[:2]>/<baseline[2:]>/<name>), read and
    dated in one git call (what `dvc exp ls --all-commits` lists, without its ~0.25 s of setup)."""
    found = []
    newest = ("--sort=-refname", "--sort=-committerdate")  # git's last --sort is the first key
    listing = _git(root, "for-each-ref", *newest, "--format=%(objectname) %(refname)", "refs/exps/")
    for line in listing.splitlines():
        rev, ref = line.split(" ", 1)
        parts = ref.split("/")  # DVC's own refs (refs/exps/exec/..., refs/exps/celery/...) are shorter
        if len(parts) == 5 and len(parts[2]) == 2 and len(parts[3]) == 38:
            found.append((parts[4], rev, parts[2] + parts[3]))
    return found


def _read_run(root: Path, name: str, rev: str, baseline: str) -> Run:
    """A recorded run, read from its commit: params.yaml and dvc.lock from git, the reports (DVC
    outputs) through DVC's file system at that commit."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(root), rev=rev)

    def read(rel: str) -> str | None:
        if rel in (PARAMS_FILE, "dvc.lock"):
            return _git(root, "show", f"{rev}:{rel}") if _has(root, rev, rel) else None
        try:
            return fs.read_text(rel)
        except (FileNotFoundError, OSError):
            return None

    return _build_run(root, name, rev, baseline, read)


def workspace_run(root: Path, name: str, rev: str) -> Run:
    """The run `record` just saved as `rev`, read from the working tree it was saved from (the same
    files, without DVC opening the commit again: ~0.3-0.6 s of the record task on the smoke run)."""
    baseline = next((b for n, r, b in _listed(root) if n == name and r == rev), None)
    if baseline is None:
        raise ExperimentError(f"{name!r} ({rev[:10]}) is not a recorded run here")

    def read(rel: str) -> str | None:
        path = Path(root) / rel
        return path.read_text() if path.is_file() else None

    return _build_run(root, name, rev, baseline, read)


def _build_run(root: Path, name: str, rev: str, baseline: str, read: Callable[[str], str | None]) -> Run:
    """A Run from its files, `read(path relative to the workspace)` -> text or None."""
    created = _git(root, "show", "-s", "--format=%cI", rev).strip()
    params = flatten(_yaml(read(PARAMS_FILE)))
    reports = str(params.get("paths.reports", "reports")).rstrip("/")
    metrics: dict[str, float] = {}
    for rel in METRICS:
        text = read(f"{reports}/{rel}")
        if text:
            stage = rel.split("/")[0]
            flat = flatten(json.loads(text), stage)
            metrics.update(
                {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            )
    curves: dict[str, list[tuple[int, float]]] = {}
    for column, rel in CURVES.items():
        text = read(f"{reports}/{rel}")
        if text:
            rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get(column) not in (None, "")]
            curves[column] = [(int(float(r["step"])), float(r[column])) for r in rows]
    lock = _yaml(read("dvc.lock"))
    ingest = (lock.get("stages") or {}).get("ingest") or {}
    data_version = next((out.get("md5") for out in ingest.get("outs", [])), None)
    return Run(name, rev, baseline, created, params, metrics, data_version, curves)


def _yaml(text: str | None) -> dict:
    """A YAML mapping (empty when missing), with libyaml where PyYAML has it (dvc.lock runs to
    ~1,600 lines)."""
    data = yaml.load(text or "", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # a safe loader
    return data if isinstance(data, dict) else {}


def _has(root: Path, rev: str, path: str) -> bool:
    return subprocess.run(["git", "cat-file", "-e", f"{rev}:{path}"], cwd=root, capture_output=True).returncode == 0


def list_runs(root: Path, limit: int | None = None) -> list[Run]:
    """The workspace's recorded runs, newest first."""
    problem = workspace_problem(root)
    if problem:
        raise ExperimentError(f"no runs to list: {problem}; runs are recorded as DVC experiments by `bertops run`")
    return [_read_run(root, name, rev, baseline) for name, rev, baseline in _listed(root)[:limit]]


def find_run(root: Path, ref: str) -> Run:
    """A run by its name or a prefix of its commit."""
    problem = workspace_problem(root)
    if problem:
        raise ExperimentError(f"cannot read runs: {problem}")
    listed = _listed(root)
    matches = [r for r in listed if r[0] == ref] or [r for r in listed if len(ref) >= 6 and r[1].startswith(ref)]
    if len(matches) != 1:
        known = ", ".join(sorted(r[0] for r in listed)[:20]) or "none yet"
        why = "is ambiguous" if matches else "is not a recorded run"
        raise ExperimentError(f"{ref!r} {why}; the runs here: {known} (bertops runs lists them)")
    return _read_run(root, *matches[0])


def production_run(root: Path, config: Config) -> str | None:
    """The name of the run that made the production model (its lineage), when it was recorded."""
    from bertops.model_store import registry_for

    registry = registry_for(config, root)
    version = registry.production(config.package.model_name)
    if version is None:
        return None
    record = registry.versions(config.package.model_name).get(version) or {}
    return (record.get("lineage") or {}).get("run")


@dataclass
class Comparison:
    a: Run
    b: Run
    params: list[tuple[str, Any, Any]]  # the params that differ
    metrics: list[tuple[str, float | None, float | None]]  # every metric either run has


def compare(a: Run, b: Run) -> Comparison:
    skip = ("paths.",)  # where files went is not a setting of the run
    keys = sorted(set(a.params) | set(b.params))
    params = [
        (k, a.params.get(k), b.params.get(k))
        for k in keys
        if a.params.get(k) != b.params.get(k) and not k.startswith(skip)
    ]
    names = [k for k in HEADLINE if k in a.metrics or k in b.metrics]
    names += sorted((set(a.metrics) | set(b.metrics)) - set(names))
    return Comparison(a, b, params, [(k, a.metrics.get(k), b.metrics.get(k)) for k in names])


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def comparison_markdown(cmp: Comparison, all_metrics: bool = False) -> str:
    """Params that differ, metrics side by side (B - A), and both training curves as sparklines."""
    from bertops.textplot import sparkline

    a, b = cmp.a, cmp.b
    lines = [
        f"# {a.name} vs {b.name}",
        "",
        "| | A | B |",
        "| --- | --- | --- |",
        f"| run | `{a.name}` | `{b.name}` |",
        f"| created | {a.created} | {b.created} |",
        f"| commit | `{a.baseline[:10]}` | `{b.baseline[:10]}` |",
        f"| data version | `{(a.data_version or '-')[:12]}` | `{(b.data_version or '-')[:12]}` |",
        "",
        "## Params that differ",
        "",
    ]
    if cmp.params:
        lines += ["| param | A | B |", "| --- | --- | --- |"]
        lines += [f"| {k} | {_fmt(va)} | {_fmt(vb)} |" for k, va, vb in cmp.params]
    else:
        lines.append("none: the same settings")
    shown = cmp.metrics if all_metrics else [m for m in cmp.metrics if m[0] in HEADLINE] or cmp.metrics[:12]
    lines += ["", "## Metrics", "", "| metric | A | B | B - A |", "| --- | ---: | ---: | ---: |"]
    for key, va, vb in shown:
        delta = f"{vb - va:+.4f}" if va is not None and vb is not None else "-"
        lines.append(f"| {key} | {_fmt(va)} | {_fmt(vb)} | {delta} |")
    lines += ["", "## Training curves", "", "```"]
    for column in CURVES:
        for tag, run in (("A", a), ("B", b)):
            values = [v for _, v in run.curves.get(column, [])]
            ends = f"{values[0]:.4g} -> {values[-1]:.4g}" if values else "none recorded"
            lines.append(f"{column:<20} {tag} {sparkline(values, 40):<40} {ends}")
    lines += ["```", ""]
    return "\n".join(lines)


def runs_table(runs: list[Run]) -> str:
    """One line per run: name, when, commit, data version, the params that vary across the runs,
    and the headline metrics."""
    if not runs:
        return "no runs recorded yet: `bertops run` records each run as a DVC experiment"

    def varies(key: str) -> bool:
        return len({json.dumps(r.params.get(key), sort_keys=True, default=str) for r in runs}) > 1

    varying = sorted(k for k in set().union(*(r.params for r in runs)) if not k.startswith("paths.") and varies(k))
    metrics = [k for k in HEADLINE if any(k in r.metrics for r in runs)]
    header = ["run", "created", "commit", "data", *varying, *(m.split(".", 1)[1] for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in runs:
        cells = [r.name, r.created[:19], r.baseline[:8], (r.data_version or "-")[:8]]
        cells += [_fmt(r.params.get(k)) for k in varying]
        cells += [_fmt(r.metrics.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_comparison(cmp: Comparison, path: Path) -> Path:
    """Both runs' training curves (validation score and train loss against step) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, column in zip(axes, CURVES, strict=True):
        for run, style in ((cmp.a, "-"), (cmp.b, "--")):
            points = run.curves.get(column, [])
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], style, label=run.name)
        ax.set_xlabel("step")
        ax.set_ylabel(column)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
