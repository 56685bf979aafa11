"""`package` and `promote`: the BentoML adapter (model store + Bento build) and the registry moves.

The only module that imports bentoml. A model is packaged only when its gate decision approves it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from bertops.config import Config
from bertops.errors import BertopsError
from bertops.model_store import registry_for, store_for
from bertops.registry import RegistryError

SETTINGS_FILE = "bertops_serving.json"


class PackagingError(BertopsError, RuntimeError):
    """A Bento that does not hold what was packaged; nothing is registered."""


class GateRejected(BertopsError, RuntimeError):
    """The model did not pass the gate, so it is not packaged or promoted."""


@dataclass(frozen=True)
class PackageResult:
    model_tag: str
    bento_tag: str
    version: str


def read_gate_decision(config: Config, root: Path) -> dict:
    path = root / config.paths.reports / "gate" / "decision.json"
    if not path.is_file():
        raise GateRejected(f"no gate decision at {path}; run `bertops gate` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise GateRejected(f"{path} is not valid JSON; re-run `bertops gate`") from None


def validation_summary(report: Path) -> dict:
    """The gist of the data-validation report a model's corpus passed (the full one stays on disk)."""
    if not report.is_file():
        return {"report": str(report), "found": False}
    data = json.loads(report.read_text())
    return {
        "report": str(report),
        "success": data.get("success"),
        "data_hash": data.get("data_hash"),
        "expectations": len(data.get("checks", [])),
        "rows": data.get("rows"),
    }


def _flat_metadata(lineage: dict) -> dict:
    """BentoML metadata keeps simple values; nested params stay in lineage.json inside the model."""
    out = {k: v for k, v in lineage.items() if isinstance(v, (str, int, float, bool)) and v is not None}
    out.update({f"metric_{k}": v for k, v in lineage.get("metrics", {}).items() if isinstance(v, (int, float))})
    return out


def check_judged_runtime(export: dict, decision: dict, model_dir: Path) -> None:
    """The bytes about to be served are the ones the gate judged: same runtime, same file hash."""
    from bertops.lineage import file_sha256

    judged = decision.get("runtime") or "torch"
    if export.get("runtime") != judged:
        raise GateRejected(
            f"the gate judged runtime {judged!r}, but the export offers {export.get('runtime')!r}; "
            "re-run `bertops evaluate` and `bertops gate`"
        )
    if judged == "torch":
        return  # the weights themselves: their sha256 was checked against the decision above
    detail = export["runtimes"][judged]
    if file_sha256(model_dir / detail["file"]) != decision.get("runtime_sha256"):
        raise GateRejected(
            f"{detail['file']} is not the file the gate judged (sha256 differs); re-run `bertops evaluate` "
            "and `bertops gate`"
        )


def _embedding_model(config: Config, root: Path, model_dir: Path, decision: dict) -> dict | None:
    """/embed's designated model (serve.embedding_model=parent: the encoder the model was fine-tuned
    from; NAME[:VERSION]: a registered embedding version), as `evaluate` put it in
    models/<dataset>-serving/embedding and the gate judged it, goes into the model's folder;
    "production": /embed serves the model's own encoder (None here)."""
    choice = config.serve.embedding_model
    if choice == "production":
        return None
    from bertops.lineage import file_sha256
    from bertops.models.export import EMBEDDING_DIR, ONNX_DIR, serving_export_dir

    source = serving_export_dir(config, root) / EMBEDDING_DIR
    judged = decision.get("embedding") or {}
    agreement = source / ONNX_DIR / "agreement.json"
    report = json.loads(agreement.read_text()) if agreement.is_file() else None
    if report is None or judged.get("embedding_model") != choice:
        raise GateRejected(
            f"serve.embedding_model={choice}: the gate did not judge that /embed model (it judged "
            f"serve.embedding_model={judged.get('embedding_model')!r}); re-run `bertops evaluate` and `bertops gate`"
        )
    runtime = report["runtime"]
    if runtime != judged.get("runtime") or (
        runtime != "torch" and file_sha256(source / report["runtimes"][runtime]["file"]) != judged.get("runtime_sha256")
    ):
        raise GateRejected(
            f"{source} is not the /embed model the gate judged (runtime or sha256 differs); re-run "
            "`bertops evaluate` and `bertops gate`"
        )
    shutil.copytree(source, model_dir / EMBEDDING_DIR, dirs_exist_ok=True)
    return {"name": judged["model"], "folder": EMBEDDING_DIR, **report}


def service_source() -> Path:
    """The folder of the endpoint's code (service.py, engine.py, bentofile.yaml): serving/ of the
    repository, installed with bertops as the package `bertops_serving`, so a machine with a plain
    `pip install bertops` packages and serves without a checkout."""
    spec = importlib.util.find_spec("bertops_serving")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if all((Path(location) / name).is_file() for name in ("service.py", "engine.py", "bentofile.yaml")):
            return Path(location)
    raise PackagingError(
        "the endpoint's code (package bertops_serving: service.py, engine.py, bentofile.yaml) is not "
        "installed with bertops; reinstall it (`pip install bertops`, or `pip install -e .` in a checkout)"
    )


def service_files(task) -> dict[str, Path]:
    """What the service's folder holds, by name there: service.py and engine.py, and the pure modules
    the service imports, as they are: the encoding, drift monitoring's window, the task's core."""
    from bertops import encoding
    from bertops.monitoring import window

    source = service_source()
    return {"service.py": source / "service.py", "engine.py": source / "engine.py",
            "bertops_encoding.py": Path(encoding.__file__), "bertops_window.py": Path(window.__file__),
            **task.bento_files()}  # fmt: skip


def lay_out_service(task, settings: dict, folder: Path) -> list[str]:
    """Write a service's folder (a Bento's build context, or the working folder of `bertops serve`):
    its code and the settings it reads at start. Returns the names written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = service_files(task)
    for name, source in files.items():
        shutil.copyfile(source, folder / name)
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return [*files, SETTINGS_FILE]


def _forget_service_modules(include: list[str]) -> None:
    """BentoML imports the service by module name and reloads only `service` itself when it was
    imported before: its own imports (engine, bertops_*) would stay those of an earlier build in
    this process, from another serving folder, with that folder's settings and model tag. Forget
    them, so this build reads this folder's files."""
    for name in {Path(item).stem for item in include if item.endswith(".py")}:
        module = sys.modules.get(name)
        if module is not None and Path(getattr(module, "__file__", None) or "").name == f"{name}.py":
            del sys.modules[name]


def _reference_profile(config: Config, root: Path, task, model_dir: Path) -> dict | None:
    """The version's reference profile for drift monitoring (bertops.monitoring.reference), from the
    eval split on the runtime that will be served; None for a task that names no inputs for it."""
    inputs = task.monitor_inputs(config, root)
    if inputs is None:
        return None
    from bertops.monitoring.reference import profile_version

    prepared = root / config.paths.prepared / config.ingest.dataset
    return profile_version(model_dir, prepared, inputs, config.monitor.reference_rows, config.monitor.seed)


def serving_settings(config: Config, task, model_tag: str, agreement: dict, embedding: dict | None = None) -> dict:
    """What the service reads at start: the request schema, limits and the runtime the gate judged.
    The service encodes text exactly as `prepare` did for training (the same bertops.encoding module)."""
    return {
        "model_tag": model_tag,
        "task": task.name,
        "serve": config.serve.model_dump(),
        "max_length": config.prepare.max_length,
        "unicode_form": config.prepare.unicode_form,
        "lowercase": config.prepare.lowercase,
        # The runtime the gate judged; the engine serves no other (see serving/engine.py).
        "runtime": agreement["runtime"],
        "onnx_files": {k: v["file"] for k, v in agreement["runtimes"].items() if v["passed"]},
        # /embed's model when it is not the served model's own encoder (serve.embedding_model)
        "embedding": None
        if embedding is None
        else {
            "name": embedding["name"],
            "folder": embedding["folder"],
            "dimension": embedding["dimension"],  # what the Bento declares; checked at package
            "vocab_size": embedding["vocab_size"],
            "runtime": embedding["runtime"],
            "onnx_files": {embedding["runtime"]: embedding["runtimes"][embedding["runtime"]]["file"]}
            if embedding["runtime"] != "torch"
            else {},
        },
        **task.serving_settings(config),
    }


def package(config: Config, root: Path = Path(".")) -> PackageResult:
    """Save the approved model into the BentoML store, build its Bento, register a candidate."""
    import bentoml

    decision = read_gate_decision(config, root)
    if decision.get("approved") is not True:
        raise GateRejected(
            "the gate rejected this model, so it is not packaged: " + "; ".join(decision.get("reasons", []))
        )
    from bertops.models.classifier import candidate_dir, verify_weights

    model_dir = candidate_dir(config, root)
    lineage = verify_weights(model_dir)  # damaged or swapped weights are never packaged
    if decision.get("model_sha256") != lineage.get("model_sha256"):
        raise GateRejected(
            f"the gate decision is for other weights than {model_dir} holds (it was re-trained "
            "since); re-run `bertops evaluate` and `bertops gate`"
        )
    evaluation = json.loads((root / config.paths.reports / "evaluate" / "metrics.json").read_text())
    lineage["evaluation"] = evaluation
    lineage["gate"] = decision
    lineage["validation"] = (
        validation_summary(root / lineage["validation_report"]) if lineage.get("validation_report") else None
    )

    from bertops.tasks import get_task

    task = get_task(config.ingest.task)
    name = config.package.model_name
    registry_for(config, root).state(name)  # an unreachable database fails here, before anything is built
    # An exception inside this block (a failed export check) discards the half-made store entry.
    with bentoml.models.create(
        name, labels={"dataset": config.ingest.dataset}, metadata=_flat_metadata(lineage)
    ) as saved:
        shutil.copytree(model_dir, saved.path, dirs_exist_ok=True)
        agreement = task.export_for_serving(config, root, Path(saved.path))
        check_judged_runtime(agreement, decision, Path(saved.path))
        lineage["serving_export"] = agreement
        (Path(saved.path) / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
        embedding = _embedding_model(config, root, Path(saved.path), decision)
        lineage["embedding_model"] = embedding
        (Path(saved.path) / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
        settings = serving_settings(config, task, str(saved.tag), agreement, embedding)
        # The model carries its serving settings: an endpoint that follows the registry reads them.
        (Path(saved.path) / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        reference = _reference_profile(config, root, task, Path(saved.path))  # travels with the version
    return _publish(config, root, task, saved, settings, lineage, decision, evaluation, reference)


def _publish(config: Config, root: Path, task, saved, settings: dict, lineage: dict, decision: dict,
             evaluation: dict, reference: dict | None) -> PackageResult:  # fmt: skip
    """The saved BentoML model -> the team's model store, a Bento of the task's service, a
    *candidate* version in the registry, reports/package/package.json."""
    import bentoml

    name = config.package.model_name
    model_tag = str(saved.tag)
    version = saved.tag.version
    assert version is not None  # bentoml.models.create gives the new model a generated version
    # The team's copy: any machine that reaches the store can fetch this version (checked by sha256).
    artifact = store_for(config, root).put(name, version, Path(saved.path))

    build = yaml.safe_load((service_source() / "bentofile.yaml").read_text())
    # The build context is a fresh folder of this version's files: nothing is written into the
    # workspace or the installed package, and no other build's settings can leak in.
    with tempfile.TemporaryDirectory(prefix="bertops-bento-") as context:
        include = lay_out_service(task, settings, Path(context))
        _forget_service_modules(include)
        bento = bentoml.bentos.build(
            service=task.service,
            name=name,
            version=version,
            build_ctx=context,
            include=include,
            python=build.get("python"),
            docker=build.get("docker"),
            labels={"dataset": config.ingest.dataset, "model": model_tag},
        )
    packed = sorted(str(model.tag) for model in bento.info.all_models)
    if packed != [model_tag]:
        bentoml.bentos.delete(str(bento.tag))
        raise PackagingError(
            f"the Bento of {model_tag} was built with the models {packed}: the service read other "
            "settings than the ones written for it; nothing was registered"
        )
    registry_for(config, root).register(
        name,
        version,
        {
            "model_tag": model_tag,
            "bento_tag": str(bento.tag),
            "artifact": artifact,
            "lineage": {k: v for k, v in lineage.items() if k not in ("evaluation", "gate")},
            "gate": decision,
            "metrics": evaluation,
            "reference_profile": reference,
        },
    )
    result = PackageResult(model_tag, str(bento.tag), version)
    out = root / config.paths.reports / "package"
    out.mkdir(parents=True, exist_ok=True)
    (out / "package.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
    return result


def package_embedding(config: Config, root: Path = Path("."), encoder: str | None = None) -> PackageResult:
    """`bertops package --embedding-only`: an embedding version of `package.model_name`, no task
    head: the encoder `encoder` (default finetune.model) exported for /embed (ONNX fp32 + int8,
    checked by cosine), scored on the runtime it will be served on beside itself in PyTorch fp32
    and the model's production version (bertops.evaluation.embedding), judged by the gate's
    embedding checks, and published like any version (model store, Bento of the `Embedding`
    service, a candidate in the registry). Serve it on its own, or name it in another model's
    `serve.embedding_model` (NAME or NAME:VERSION)."""
    import datetime as dt

    import bentoml

    from bertops.evaluation.embedding import export_encoder, packaged_embedding, score_embedding_model
    from bertops.evaluation.gate import decide_embedding
    from bertops.lineage import git_commit
    from bertops.models.export import EMBEDDING_DIR
    from bertops.tasks import get_task

    source = encoder or config.finetune.model
    name = config.package.model_name
    registry = registry_for(config, root)
    registry.state(name)  # an unreachable database fails here, before anything is built
    target = root / config.paths.models / f"{name}-embedding"
    report = export_encoder(config, root, source, target)
    section = score_embedding_model(
        config.model_copy(update={"serve": config.serve.model_copy(update={"embedding_model": "production"})}),
        root,
        packaged_embedding(report["name"], target, report),
        report,
        source,
    )
    section["embedding_model"] = "embedding-only"
    decision = decide_embedding(section, config.gate)
    out = root / config.paths.reports / "gate"
    out.mkdir(parents=True, exist_ok=True)
    (out / "embedding-decision.json").write_text(decision.to_json())
    (out / "embedding-decision.md").write_text(decision.to_markdown())
    if not decision.approved:
        raise GateRejected(
            "the gate rejected this embedding model, so it is not packaged: " + "; ".join(decision.reasons)
        )
    task = get_task("embedding")
    embedding = {"name": report["name"], "folder": EMBEDDING_DIR, **report}
    lineage = {
        "task": "embedding",
        "dataset": config.ingest.dataset,
        "parent_model": report["name"],
        "git_commit": git_commit(root),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "embedding_model": embedding,
        "evaluation": {"embedding": section},
        "gate": json.loads(decision.to_json()),
    }
    with bentoml.models.create(name, labels={"task": "embedding"}, metadata=_flat_metadata(lineage)) as saved:
        shutil.copytree(target, Path(saved.path) / EMBEDDING_DIR)
        (Path(saved.path) / "lineage.json").write_text(json.dumps(lineage, indent=2) + "\n")
        agreement = {"runtime": report["runtime"], "runtimes": {}}
        settings = serving_settings(config, task, str(saved.tag), agreement, embedding)
        (Path(saved.path) / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    gate = json.loads(decision.to_json())
    return _publish(config, root, task, saved, settings, lineage, gate, {"embedding": section}, None)


def promote(
    config: Config,
    root: Path = Path("."),
    version: str | None = None,
    reason: str = "",
    force: bool = False,
    canary: float | None = None,
    shadow: bool = False,
) -> dict:
    """Move a version (default: the last packaged one) to `promote.stage`; or, with `canary`, send
    that share of the requests to it; or, with `shadow`, run it beside production on every request."""
    registry = registry_for(config, root)
    name = config.package.model_name
    if canary is not None and shadow:
        raise RegistryError("choose --canary PERCENT or --shadow, not both")
    if version is None:
        packaged = root / config.paths.reports / "package" / "package.json"
        if not packaged.is_file():
            raise RegistryError("no version given and nothing packaged yet; run `bertops package` or pass VERSION")
        version = json.loads(packaged.read_text())["version"]
    if canary is not None or shadow:
        routing = registry.start_trial(name, version, canary, reason=reason, force=force)
        return {"model": name, "version": version, "stage": "canary" if canary is not None else "shadow",
                "canary_percent": canary, "production": routing.production}  # fmt: skip
    previous = registry.promote(name, version, config.promote.stage, reason=reason, force=force)
    record = {
        "model": name,
        "version": version,
        "stage": config.promote.stage,
        "previous": previous,
        "bento_tag": registry.versions(name)[version]["bento_tag"],
    }
    out = root / config.paths.reports / "promote"
    out.mkdir(parents=True, exist_ok=True)
    (out / "promote.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
