"""DVC sees every input: each stage's `deps` cover every bertops module the stage imports (its whole
import closure, the registry's task lookup included) and its `params` cover every config key that
code reads. A module or a setting a stage reads but DVC does not know about would leave
`dvc repro` skipping a stale stage; this test names it, with the line to add to dvc.yaml."""

from __future__ import annotations

import ast
import typing

import pytest
import yaml

from tests.importgraph import REGISTRY, REPO, closure, graph, imports_of, module_files, resolve

# The module behind each stage's CLI verb (`bertops VERB` in dvc.yaml).
ENTRY = {
    "ingest": "bertops.data.ingest",
    "validate": "bertops.data.validation",
    "pretrain": "bertops.pretraining.run",
    "prepare": "bertops.data.prepare",
    "finetune": "bertops.training.finetune",
    "distill": "bertops.training.distill",
    "evaluate": "bertops.evaluation.evaluate",
    "gate": "bertops.evaluation.gate",
    "package": "bertops.packaging",
    "promote": "bertops.packaging",
}
# The module of each task a stage's hook imports when called (bertops/tasks/<task>/<module>.py);
# the task's __init__ (its Task class, gate rules included) is read by every stage that looks it up.
HOOK = {
    "validate": "validate",
    "prepare": "prepare",
    "finetune": "finetune",
    "evaluate": "evaluate",
    "gate": "gate",
    "package": "package",
    "promote": "package",
}
# Files a stage reads besides bertops' modules.
EXTRA = {"package": ["serving/service.py", "serving/engine.py", "serving/bentofile.yaml"]}
NOT_PARAMS = {"paths"}  # locations: they are the stage's deps and outs already


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _sections() -> tuple[dict[str, str], dict[str, str]]:
    """(attribute -> params section) of the root Config, and (section class name -> section)."""
    from bertops.config import Config

    attributes, classes = {}, {}
    for attribute, info in Config.model_fields.items():
        section = info.alias or attribute
        attributes[attribute] = section
        for kind in typing.get_args(info.annotation) or (info.annotation,):
            classes[getattr(kind, "__name__", "")] = section
    return attributes, classes


def _chain(node: ast.AST) -> list[str]:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
        return names[::-1]
    return []


def config_reads(path) -> set[tuple[str, str]]:
    """(section, key) pairs a module reads: `config.<section>.<key>`, an alias of a section
    (`cfg = config.finetune`; `ing, prep = config.ingest, config.prepare`) or a parameter annotated
    with a section's class (`policy: GateConfig`); key "*" = the whole section dumped
    (`config.serve.model_dump()`)."""
    attributes, classes = _sections()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            pairs = (
                list(zip(target.elts, value.elts))
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                else [(target, value)]
            )
            for name, section in pairs:
                chain = _chain(section)
                if isinstance(name, ast.Name) and len(chain) == 2 and chain[0] == "config" and chain[1] in attributes:
                    aliases[name.id] = attributes[chain[1]]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in node.args.args + node.args.kwonlyargs:
                annotation = ast.unparse(arg.annotation) if arg.annotation else ""
                if annotation in classes:
                    aliases[arg.arg] = classes[annotation]
    reads = set()
    for node in ast.walk(tree):
        chain = _chain(node) if isinstance(node, ast.Attribute) else []
        if len(chain) >= 3 and chain[0] == "config" and chain[1] in attributes:
            reads.add((attributes[chain[1]], chain[2]))
        elif len(chain) >= 2 and chain[0] in aliases:
            reads.add((aliases[chain[0]], chain[1]))
    return {(section, "*" if key.startswith("model_") else key) for section, key in reads if section not in NOT_PARAMS}


def _stage_modules(stage: str) -> set[str]:
    """The modules a stage runs: the entry's import closure, where a task package's lazy hook imports
    are replaced by the one hook module of this stage (the registry's lookup, followed by name)."""
    edges = graph()
    tasks = sorted(m for m in edges if m.count(".") == 2 and m.startswith(REGISTRY + "."))
    files = module_files()
    for task in tasks:  # the Task class imports each hook's module lazily: follow only this stage's
        edges[task] = {resolve(i.target, files) for i in imports_of(task, files[task]) if i.top_level} - {None, task}
    modules = closure(ENTRY[stage], edges)
    if REGISTRY in modules:
        for task in tasks:
            modules |= closure(task, edges)
            hook = f"{task}.{HOOK.get(stage, '')}"
            if hook in edges:
                modules |= closure(hook, edges)
    return modules


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_deps_cover_every_module_the_stage_imports(stage):
    files = module_files()
    deps = [str(d) for d in _stages()[stage].get("deps", [])]
    needed = sorted({str(files[m].relative_to(REPO)) for m in _stage_modules(stage)} | set(EXTRA.get(stage, [])))
    missing = [path for path in needed if not _covered(path, deps)]
    assert not missing, f"dvc.yaml stage {stage!r} reads these files but does not list them in deps: {missing}"


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_params_cover_every_setting_the_stage_reads(stage):
    files = module_files()
    params = [str(p) for p in _stages()[stage].get("params", [])]
    reads = set().union(*(config_reads(files[m]) for m in _stage_modules(stage)))
    missing = sorted(
        f"{section}.{key}" if key != "*" else section
        for section, key in reads
        if section not in params and (key == "*" or f"{section}.{key}" not in params)
    )
    assert not missing, f"dvc.yaml stage {stage!r} reads these settings but does not list them in params: {missing}"


def test_the_scanner_sees_what_a_stage_reads():
    """The checks above are only as good as the scanner: it must see direct reads, aliases,
    annotated parameters and whole sections handed on."""
    files = module_files()
    prepare = config_reads(files["bertops.tasks.classification.prepare"])
    assert {("ingest", "text_column"), ("ingest", "text_pair_column")} <= prepare  # ing = config.ingest
    assert ("prepare", "max_length") in prepare  # prep = config.prepare
    assert ("ingest", "search_paths") in config_reads(files["bertops.data.ingest"])  # cfg: IngestConfig
    assert ("gate", "non_inferiority_margin") in config_reads(files["bertops.evaluation.gate"])  # policy: GateConfig
    assert ("serve", "*") in config_reads(files["bertops.packaging"])  # config.serve.model_dump()
    assert "bertops.tasks.ner.prepare" in _stage_modules("prepare")  # the registry's lookup is followed
    assert "bertops.tasks.ner.evaluate" not in _stage_modules("prepare")  # ... to this stage's hook only
    assert "bertops.tasks.qa.gate" in _stage_modules("gate")


def test_every_task_module_is_some_stage_s_dependency():
    """A task module no stage reaches would be skipped by the closure: name it in HOOK (or import it)."""
    reached = set().union(*(_stage_modules(stage) for stage in ENTRY))
    task_modules = [m for m in module_files() if m.startswith(REGISTRY + ".") and m.count(".") == 3]
    assert task_modules and not [m for m in task_modules if m not in reached]


def write_dvc_yaml() -> None:
    """Rewrite each stage's code deps (bertops/, serving/) and params in dvc.yaml from what the
    stage reads; other deps, outs and comments stay. `python -m tests.unit.test_dvc_deps`."""
    import re

    files = module_files()
    text = (REPO / "dvc.yaml").read_text()
    lines = text.splitlines()
    out, stage = [], None
    plan = {}
    for st in ENTRY:
        mods = _stage_modules(st)
        code = sorted({str(files[m].relative_to(REPO)) for m in mods} | set(EXTRA.get(st, [])))
        reads = set().union(*(config_reads(files[m]) for m in mods))
        whole = {s for s, k in reads if k == "*"}
        params = sorted(whole | {f"{s}.{k}" for s, k in reads if k != "*" and s not in whole})
        plan[st] = (code, params)
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            stage = m.group(1)
        m2 = re.match(r"^    (deps|params):\s*$", line)
        if m2 and stage in plan:
            key = m2.group(1)
            out.append(line)
            i += 1
            kept = []
            while i < len(lines) and lines[i].startswith("      "):
                item = lines[i]
                val = item.strip()[2:].split("#")[0].strip()
                if key == "deps" and (val.startswith("bertops/") or val.startswith("serving/")):
                    pass
                elif key == "params":
                    pass
                else:
                    kept.append(item)
                i += 1
            code, params = plan[stage]
            if key == "deps":
                out += kept + [f"      - {c}" for c in code]
            else:
                out += [f"      - {p}" for p in params]
            continue
        out.append(line)
        i += 1
    (REPO / "dvc.yaml").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    write_dvc_yaml()
