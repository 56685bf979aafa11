"""The layers stay where ARCHITECTURE.md puts them: checked on the source, so a violation fails
the fast tier with the file and line, not a reviewer's memory."""

from __future__ import annotations

from tests.importgraph import REGISTRY, REPO, circles, graph, imports_of, module_files

ENGINES = ("prefect", "ray", "bentoml", "dvc")
PURE = ["bertops.encoding"] + [m for m in module_files() if m.startswith("bertops.tasks.") and m.endswith(".core")]


def _all_imports(package: str = "bertops"):
    for name, path in module_files(package).items():
        yield from imports_of(name, path)


def test_the_library_never_imports_its_orchestrator():
    bad = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in _all_imports()
        if i.target.split(".")[0] in ("flows", "bertops_flows")
    ]
    assert not bad, "bertops must not import the Prefect layer (the CLI reaches it by name):\n" + "\n".join(bad)


def test_task_cores_and_the_encoding_import_nothing_of_bertops():
    """They are copied into the Bento as they are, where no bertops is installed."""
    assert len(PURE) >= 4  # the encoding + classification, ner, qa cores
    files = module_files()
    bad = [
        f"{i.source}:{i.line} imports {i.target}"
        for m in PURE
        for i in imports_of(m, files[m])
        if i.target.split(".")[0] == "bertops"
    ]
    assert not bad, "\n".join(bad)


def test_core_modules_import_no_engine_at_module_level():
    """prefect, ray, bentoml and dvc are reached inside the functions of their adapters only."""
    bad = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in _all_imports()
        if i.top_level and i.target.split(".")[0] in ENGINES
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circles_among_bertops_modules():
    """A stage finding its task through the registry (get_task, by name) is the plugin seam, not an import."""
    groups = circles(graph())
    assert not groups, "import circles (function-local imports included):\n" + "\n".join(map(str, groups))


def test_generic_stage_modules_hold_no_task_code():
    """The generic stages reach tasks through the registry only, never a task module by name."""
    generic = [
        "bertops.data.validation",
        "bertops.data.prepare",
        "bertops.training.loop",
        "bertops.training.finetune",
        "bertops.evaluation.evaluate",
        "bertops.evaluation.gate",
        "bertops.packaging",
    ]
    files = module_files()
    for module in generic:
        text = files[module].read_text()
        assert '"ner"' not in text and '"qa"' not in text and '== "classification"' not in text, module
        allowed = (f"{REGISTRY}.get_task", f"{REGISTRY}.base")
        bad = [
            i.target
            for i in imports_of(module, files[module])
            if i.target.startswith(REGISTRY + ".") and not i.target.startswith(allowed)
        ]
        assert not bad, f"{module} imports task modules directly: {bad}"


# What an endpoint that follows the registry imports (inside Endpoint.__init__, only when `bertops
# serve` started it, so with bertops installed): the follower and the two stores it reads.
FOLLOW_IMPORTS = {"bertops.follow", "bertops.model_store", "bertops.registry", "bertops.events"}


def test_the_service_files_need_no_bertops():
    """serving/ runs inside the Bento: it imports the copied pure modules, never bertops, except
    the follower's three modules, imported in the function that starts it."""
    for path in (REPO / "serving").glob("*.py"):
        if path.name.startswith("bertops_"):
            continue  # copies written by `bertops package`
        found = [i for i in imports_of(path.stem, path) if i.target.split(".")[0] in ("bertops", "bertops_flows")]
        allowed = FOLLOW_IMPORTS if path.name == "service.py" else set()
        bad = [i.target for i in found if not ({i.target, i.target.rsplit(".", 1)[0]} & allowed)]
        assert not bad, f"{path.name} imports {bad}"
        assert not [i for i in found if i.top_level], f"{path.name} imports bertops at module level"
