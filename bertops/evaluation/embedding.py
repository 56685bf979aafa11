"""Does `/embed`'s model keep its meaning? Scored by `evaluate`, judged by the gate.

The model `/embed` will serve (`serve.embedding_model`) is scored on the runtime it will be served
on, and beside it, on the very same texts:
- the parent encoder (`finetune.model`, PyTorch fp32, mean pooling): the general-purpose space
  the model was fine-tuned from;
- production's `/embed` model, on the runtime production serves it on, when there is one.

Two benchmarks built from data at hand:
- retrieval: question -> paragraph on SQuAD v1.1 dev articles (held out from SQuAD's train):
  whole articles in a seeded order until `paragraphs`, one question each, so most distractors of
  a question share its topic; recall@1, recall@5 and MRR of each question's own paragraph by
  cosine. Candidate vs a baseline: the paired bootstrap CI and McNemar's p of the recall@1
  difference (`bertops.evaluation.stats.compare`, as for the classifier's accuracy);
- sentence-pair similarity, when `evaluate.embedding.sts` names a file (sentence1, sentence2,
  score): Spearman correlation of the cosine with the scores, and a paired bootstrap CI of the
  Spearman difference (pairs resampled together).

With `serve.embedding_model: parent`, evaluate also exports the parent encoder for serving (ONNX
fp32 + int8, checked by cosine) into models/<dataset>-serving/embedding/: the runtime chosen there
is the one scored here, judged by the gate and shipped by `package` (its sha256 is recorded).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertops.atomic import replace_dir, staging_dir
from bertops.config import Config, EmbeddingEvalConfig, RetrievalSetConfig
from bertops.data.sources import DataSourceError, first_search_path, read_table
from bertops.encoding import normalize_input
from bertops.evaluation.stats import compare, paired_bootstrap_statistic

Embedder = Callable[[list[str]], np.ndarray]  # texts -> one vector per text
SQUAD_DEV = "dev-v1.1.json"
STS_COLUMNS = ("sentence1", "sentence2", "score")


@dataclass(frozen=True)
class RetrievalSet:
    """Question i's answer is in paragraph i."""

    questions: list[str]
    paragraphs: list[str]
    source: str
    spare: list[str]  # questions and paragraphs of the next articles, outside the set (export checks)


def retrieval_pairs(articles: list[dict], n: int, seed: int) -> tuple[list[str], list[str]]:
    """(questions, paragraphs) from SQuAD-format articles: whole articles in a seeded order until
    `n` paragraphs, the first question of each."""
    articles = list(articles)
    random.Random(seed).shuffle(articles)
    pairs = [
        (p["qas"][0]["question"], p["context"])
        for article in articles
        for p in article.get("paragraphs", [])
        if p.get("qas") and p.get("context")
    ]
    return [q for q, _ in pairs[:n]], [c for _, c in pairs[:n]]


def _squad_file(cfg: RetrievalSetConfig, root: Path) -> Path | None:
    if cfg.path is not None:
        path = cfg.path if cfg.path.is_absolute() else root / cfg.path
        path = path / SQUAD_DEV if path.is_dir() else path
        if not path.is_file():
            raise DataSourceError(
                f"evaluate.embedding.retrieval.path={cfg.path}: no SQuAD JSON file there (a file, or a folder "
                f"holding {SQUAD_DEV})"
            )
        return path
    found = first_search_path(cfg.search_paths, root, lambda folder: (folder / SQUAD_DEV).is_file())
    return found[1] / SQUAD_DEV if found else None


def _hub_articles(hub_id: str) -> list[dict]:
    """SQuAD's validation split from the hub, regrouped into articles (title -> paragraphs)."""
    import datasets

    rows = datasets.load_dataset(hub_id, split="validation")
    articles: dict[str, dict[str, list[str]]] = {}
    for title, context, question in zip(rows["title"], rows["context"], rows["question"]):
        articles.setdefault(title, {}).setdefault(context, []).append(question)
    return [
        {"title": t, "paragraphs": [{"context": c, "qas": [{"question": q} for q in qs]} for c, qs in ps.items()]}
        for t, ps in articles.items()
    ]


def load_retrieval_set(cfg: RetrievalSetConfig, root: Path) -> RetrievalSet:
    """The retrieval benchmark: a local SQuAD v1.1 dev file, else the hub dataset, else a clear error."""
    path = _squad_file(cfg, root)
    if path is not None:
        try:
            articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataSourceError(f"{path} is not a SQuAD JSON file (no top-level 'data' list of articles)") from None
        source = str(path)
    elif cfg.hub_id:
        try:
            articles = _hub_articles(cfg.hub_id)
        except Exception as exc:  # offline, unknown id: one clear message
            raise DataSourceError(
                f"embedding retrieval benchmark: no {SQUAD_DEV} in evaluate.embedding.retrieval.search_paths "
                f"{cfg.search_paths} and the hub dataset {cfg.hub_id!r} could not be loaded ({type(exc).__name__}). "
                "Set BERTOPS_DATASETS to a folder holding squad-v1.1/, pass "
                "-s evaluate.embedding.retrieval.path=/path/to/dev-v1.1.json, or turn the benchmark off with "
                "-s evaluate.embedding.retrieval=null"
            ) from None
        source = f"hub:{cfg.hub_id}"
    else:
        raise DataSourceError(
            f"embedding retrieval benchmark: no {SQUAD_DEV} in evaluate.embedding.retrieval.search_paths "
            f"{cfg.search_paths} and no hub_id; pass -s evaluate.embedding.retrieval.path=/path/to/dev-v1.1.json"
        )
    questions, paragraphs = retrieval_pairs(articles, cfg.paragraphs + 100, cfg.seed)
    n = cfg.paragraphs
    if len(paragraphs) < min(n, 10):
        raise DataSourceError(f"{source}: only {len(paragraphs)} paragraphs with a question; retrieval needs >= 10")
    return RetrievalSet(questions[:n], paragraphs[:n], source, questions[n:] + paragraphs[n:])


def load_sts(path: Path, root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(first sentences, second sentences, gold scores) from a sentence-pair similarity file."""
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DataSourceError(f"evaluate.embedding.sts={path}: no such file")
    frame = read_table(path)
    missing = [c for c in STS_COLUMNS if c not in frame.columns]
    if missing:
        raise DataSourceError(
            f"{path}: the sentence-pair similarity file needs columns {list(STS_COLUMNS)}; missing {missing} "
            f"(has {list(frame.columns)})"
        )
    scores = np.array([_number(v) for v in frame["score"]], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise DataSourceError(f"{path}: score is not a number on rows {[int(i) + 2 for i in bad[:5]]} (1 = header)")
    if len(frame) < 10 or np.ptp(scores) == 0:
        raise DataSourceError(f"{path}: needs >= 10 pairs with scores that differ, got {len(frame)}")
    return frame["sentence1"].astype(str).tolist(), frame["sentence2"].astype(str).tolist(), scores


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def ranks(questions: np.ndarray, paragraphs: np.ndarray) -> np.ndarray:
    """Rank of each question's own paragraph among all by cosine (0 = first)."""
    q = questions / np.maximum(np.linalg.norm(questions, axis=1, keepdims=True), 1e-12)
    p = paragraphs / np.maximum(np.linalg.norm(paragraphs, axis=1, keepdims=True), 1e-12)
    similarity = q @ p.T
    own = similarity[np.arange(len(q)), np.arange(len(q))][:, None]
    return (similarity > own).sum(axis=1)


def retrieval_metrics(rank: np.ndarray) -> dict:
    return {
        "recall@1": float((rank < 1).mean()),
        "recall@5": float((rank < 5).mean()),
        "mrr": float((1.0 / (rank + 1)).mean()),
    }


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


@dataclass
class Scored:
    """One embedder's per-example results on the benchmarks."""

    rank: np.ndarray | None  # retrieval: rank of each question's paragraph
    cosine: np.ndarray | None  # sts: cosine of each pair

    def summary(self, gold: np.ndarray | None) -> dict:
        out: dict = {}
        if self.rank is not None:
            out["retrieval"] = retrieval_metrics(self.rank)
        if self.cosine is not None and gold is not None:
            out["sts"] = {"spearman": spearman(self.cosine, gold)}
        return out


def score(embed: Embedder, retrieval: RetrievalSet | None, sts) -> Scored:
    rank = ranks(embed(retrieval.questions), embed(retrieval.paragraphs)) if retrieval else None
    cosine = cosines(embed(sts[0]), embed(sts[1])) if sts else None
    return Scored(rank, cosine)


def versus(candidate: Scored, baseline: Scored, gold: np.ndarray | None, confidence: float, resamples: int) -> dict:
    """The candidate minus a baseline on the same examples: recall@1 (paired bootstrap + McNemar)
    and STS Spearman (paired bootstrap)."""
    out: dict = {}
    if candidate.rank is not None and baseline.rank is not None:
        paired = compare(candidate.rank < 1, baseline.rank < 1, confidence, resamples, seed=0)
        out["retrieval"] = {**retrieval_metrics(baseline.rank), "recall@1_difference": paired.__dict__}
    if candidate.cosine is not None and baseline.cosine is not None and gold is not None:
        low, high = paired_bootstrap_statistic(
            lambda i: spearman(candidate.cosine[i], gold[i]) - spearman(baseline.cosine[i], gold[i]),
            len(gold),
            confidence,
            min(resamples, 1000),
        )
        difference = spearman(candidate.cosine, gold) - spearman(baseline.cosine, gold)
        out["sts"] = {
            "spearman": spearman(baseline.cosine, gold),
            "spearman_difference": {"difference": difference, "ci_low": low, "ci_high": high},
        }
    return out


def onnx_embedder(path: Path, tokenizer, max_length: int, batch_size: int, normalise) -> Embedder:
    from bertops.models.export import onnx_session, session_logits

    session = onnx_session(path)
    return lambda texts: session_logits(
        session, tokenizer, [normalise(t) for t in texts], max_length, batch_size, output="embedding"
    )


def torch_embedder(model_dir: str | Path, max_length: int, batch_size: int, normalise) -> Embedder:
    """Mean pooling over the encoder of a model folder or hub id (a classifier's folder: its encoder)."""
    from transformers import AutoModel, AutoTokenizer

    from bertops.models.export import torch_embeddings

    encoder = AutoModel.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return lambda texts: torch_embeddings(encoder, tokenizer, [normalise(t) for t in texts], max_length, batch_size)


@dataclass(frozen=True)
class EmbeddingModel:
    """A model `/embed` serves: where it lives, on which runtime (and that file's sha256)."""

    name: str
    folder: Path  # holds the tokenizer (and the weights for torch)
    runtime: str  # torch | onnx | onnx-int8
    file: Path | None  # the ONNX file, for an ONNX runtime
    sha256: str | None

    def embedder(self, max_length: int, batch_size: int, normalise) -> Embedder:
        if self.file is None:
            return torch_embedder(self.folder, max_length, batch_size, normalise)
        from transformers import AutoTokenizer

        return onnx_embedder(self.file, AutoTokenizer.from_pretrained(str(self.folder)), max_length, batch_size,
                             normalise)  # fmt: skip


def _has_embedding_output(path: Path) -> bool:
    """Whether the graph has an `embedding` output: read from the file's graph, without the weights
    or a runtime session."""
    import onnx

    return any(o.name == "embedding" for o in onnx.load(str(path), load_external_data=False).graph.output)


def own_encoder(name: str, model_dir: Path, runtime: str, onnx_file: Path | None) -> EmbeddingModel:
    """A model's own encoder as /embed serves it: the embedding output of its served ONNX graph when
    it has one, else mean pooling in PyTorch."""
    from bertops.lineage import file_sha256

    if runtime != "torch" and onnx_file is not None and onnx_file.is_file() and _has_embedding_output(onnx_file):
        return EmbeddingModel(name, model_dir, runtime, onnx_file, file_sha256(onnx_file))
    return EmbeddingModel(name, model_dir, "torch", None, None)


def packaged_embedding(name: str, folder: Path, report: dict) -> EmbeddingModel:
    """A designated embedding model exported by `export_embedding_model` (its agreement report)."""
    runtime = report["runtime"]
    if runtime == "torch":
        return EmbeddingModel(name, folder, "torch", None, None)
    detail = report["runtimes"][runtime]
    return EmbeddingModel(name, folder, runtime, folder / detail["file"], detail.get("sha256"))


def check_texts(config: Config, root: Path) -> list[str]:
    """Texts an embedding export is checked on: the prepared corpus's validation slice, else
    SQuAD texts outside the retrieval set (never the texts it is scored on)."""
    from bertops.models.export import sample_texts

    prepared = root / config.paths.prepared / config.ingest.dataset
    cfg = config.evaluate.embedding
    if (prepared / "validation.parquet").is_file() or cfg is None or cfg.retrieval is None:
        return sample_texts(prepared)
    return load_retrieval_set(cfg.retrieval, root).spare[:200] or sample_texts(prepared)


def export_encoder(config: Config, root: Path, source: str, target: Path) -> dict:
    """The encoder `source` (a folder, a hub id, or "packaged") exported for /embed into `target`
    (ONNX fp32 + int8 checked by cosine; replaced as a whole, a failed export leaves the previous one)."""
    from bertops.models.export import export_embedding_model
    from bertops.models.pretrained import describe_model_source, resolve_model_source

    staging = staging_dir(target)
    try:
        report = export_embedding_model(
            resolve_model_source(source),
            staging,
            check_texts(config, root),
            config.prepare.max_length,
            config.serve.onnx_max_abs_diff,
        )
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, target)
    return {"name": describe_model_source(source), "source": source, **report}


def candidate_embedding(
    config: Config, root: Path, model_dir: Path, serving: dict
) -> tuple[EmbeddingModel, dict | None]:
    """What the candidate's /embed will serve, on its runtime; with the report of its export (the
    parent encoder exported here, or a registered embedding version copied here from the model
    store: both into models/<dataset>-serving/embedding/, which `package` ships)."""
    from bertops.models.export import EMBEDDING_DIR, serving_export_dir

    export_dir = serving_export_dir(config, root)
    choice = config.serve.embedding_model
    if choice == "parent":
        folder = export_dir / EMBEDDING_DIR
        report = export_encoder(config, root, config.finetune.model, folder)
        return packaged_embedding(report["name"], folder, report), report
    if choice != "production":
        folder = export_dir / EMBEDDING_DIR
        report = copy_registered(config, root, choice, folder)
        return packaged_embedding(report["name"], folder, report), report
    runtime = serving.get("runtime") or "torch"
    detail = ((serving.get("export") or {}).get("runtimes") or {}).get(runtime) or {}
    onnx_file = export_dir / detail["file"] if detail.get("file") else None
    return own_encoder("the candidate's own encoder", model_dir, runtime, onnx_file), None


def copy_registered(config: Config, root: Path, choice: str, target: Path) -> dict:
    """serve.embedding_model=NAME[:VERSION]: that registered embedding version (default: NAME's
    production version), fetched from the model store (sha256-checked), copied into `target`."""
    import shutil

    from bertops.model_store import fetch_version, registry_for
    from bertops.registry import RegistryError

    name, _, named = choice.partition(":")
    registry = registry_for(config, root)
    version = named or registry.production(name)
    if version is None or not version:
        raise RegistryError(
            f"serve.embedding_model={choice}: {name!r} has no production version; name one ({name}:VERSION, see "
            f"`bertops models list -s package.model_name={name}`) or promote one"
        )
    path = fetch_version(config, version, root, registry, name=name)
    lineage = json.loads((path / "lineage.json").read_text()) if (path / "lineage.json").is_file() else {}
    designated = lineage.get("embedding_model")
    if not designated or lineage.get("task") != "embedding":
        raise RegistryError(
            f"serve.embedding_model={choice}: {name}:{version} is not an embedding version (package one with "
            "`bertops package --embedding-only`)"
        )
    staging = staging_dir(target)
    shutil.copytree(path / designated["folder"], staging, dirs_exist_ok=True)
    replace_dir(staging, target)
    return {**{k: v for k, v in designated.items() if k != "folder"}, "name": f"{name}:{version}"}


def production_embedding(config: Config, root: Path) -> tuple[str, EmbeddingModel] | None:
    """Production's /embed model, on the runtime production serves it on (from its lineage)."""
    from bertops.model_store import production_model

    found = production_model(config, root)
    if found is None:
        return None
    version, path = found
    lineage = json.loads((path / "lineage.json").read_text()) if (path / "lineage.json").is_file() else {}
    designated = lineage.get("embedding_model")
    if designated:
        return version, packaged_embedding(designated["name"], path / designated["folder"], designated)
    from bertops.models.export import served_runtime_of

    runtime = served_runtime_of(path, lineage)
    detail = ((lineage.get("serving_export") or {}).get("runtimes") or {}).get(runtime) or {}
    onnx_file = path / detail["file"] if detail.get("file") else None
    return version, own_encoder(f"{version} (its own encoder)", path, runtime, onnx_file)


_PARENT_SCORES: dict[tuple, Scored] = {}  # the parent's weights never change: scored once per process


def _parent_scores(source: str, config: Config, retrieval: RetrievalSet | None, sts) -> Scored:
    """The parent encoder (PyTorch fp32) on the benchmarks, cached by everything it depends on."""
    prep, batch = config.prepare, config.evaluate.embedding.batch_size if config.evaluate.embedding else 32
    weights = Path(source) / "model.safetensors"  # a local folder re-trained in this process is a new parent
    key = (
        source,
        weights.stat().st_mtime_ns if weights.is_file() else None,
        prep.max_length,
        prep.unicode_form,
        prep.lowercase,
        hash(tuple(retrieval.questions + retrieval.paragraphs)) if retrieval else None,
        hash(tuple(sts[0] + sts[1])) if sts else None,
    )
    if key not in _PARENT_SCORES:
        normalise = lambda text: normalize_input(text, prep.unicode_form, prep.lowercase)  # noqa: E731
        _PARENT_SCORES[key] = score(torch_embedder(source, prep.max_length, batch, normalise), retrieval, sts)
    return _PARENT_SCORES[key]


def evaluate_embeddings(config: Config, root: Path, model_dir: Path, serving: dict) -> dict:
    """The `embedding` section of the evaluation report (see the module docstring)."""
    candidate, export = candidate_embedding(config, root, model_dir, serving)
    return score_embedding_model(config, root, candidate, export, config.finetune.model)


def score_embedding_model(
    config: Config, root: Path, candidate: EmbeddingModel, export: dict | None, parent_source: str
) -> dict:
    """`candidate` scored beside `parent_source` (PyTorch fp32) and production's /embed model."""
    from bertops.models.pretrained import describe_model_source, resolve_model_source

    section: dict = {
        "model": candidate.name,
        "embedding_model": config.serve.embedding_model,
        "runtime": candidate.runtime,
        "runtime_sha256": candidate.sha256,
        "export": export,
    }
    cfg: EmbeddingEvalConfig | None = config.evaluate.embedding
    if cfg is None or (cfg.retrieval is None and cfg.sts is None):
        return {**section, "scored": False}
    retrieval = load_retrieval_set(cfg.retrieval, root) if cfg.retrieval else None
    sts = load_sts(cfg.sts, root) if cfg.sts else None
    gold = sts[2] if sts else None
    prep = config.prepare
    normalise = lambda text: normalize_input(text, prep.unicode_form, prep.lowercase)  # noqa: E731
    length, batch = prep.max_length, cfg.batch_size

    mine = score(candidate.embedder(length, batch, normalise), retrieval, sts)
    parent = _parent_scores(resolve_model_source(parent_source), config, retrieval, sts)
    gate = config.gate
    section.update(mine.summary(gold))
    section["scored"] = True
    section["retrieval_source"] = retrieval.source if retrieval else None
    section["paragraphs"] = len(retrieval.paragraphs) if retrieval else 0
    section["sts_pairs"] = len(gold) if gold is not None else 0
    section["versus"] = {
        "parent": {
            "name": f"{describe_model_source(parent_source)}, PyTorch fp32",
            **versus(mine, parent, gold, gate.confidence, gate.bootstrap_resamples),
        }
    }
    found = production_embedding(config, root)
    if found is not None:
        version, model = found
        # The same bytes as the candidate's (e.g. both serve the same parent export): the same scores.
        same = model.sha256 is not None and model.sha256 == candidate.sha256
        theirs = mine if same else score(model.embedder(length, batch, normalise), retrieval, sts)
        section["versus"]["production"] = {
            "name": f"production {version}: {model.name}, {model.runtime}",
            "version": version,
            **versus(mine, theirs, gold, gate.confidence, gate.bootstrap_resamples),
        }
    return section


def markdown(section: dict | None) -> str:
    if not section:
        return ""
    lines = ["", f"### /embed's model: {section['model']} ({section['runtime']})", ""]
    if not section.get("scored"):
        return "\n".join([*lines, "Not scored (evaluate.embedding is null)."]) + "\n"
    rows = [
        "| embedder | recall@1 | recall@5 | MRR | STS Spearman | recall@1 difference, CI |",
        "| --- |" + " ---: |" * 5,
    ]
    r = section.get("retrieval") or {}
    s = section.get("sts") or {}

    def cell(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    def row(name: str, r: dict, s: dict, ci: str) -> str:
        figures = [cell(r.get("recall@1")), cell(r.get("recall@5")), cell(r.get("mrr")), cell(s.get("spearman"))]
        return f"| {name} | " + " | ".join(figures) + f" | {ci} |"

    rows.append(row("**candidate**", r, s, ""))
    for other in section["versus"].values():
        r, s = other.get("retrieval") or {}, other.get("sts") or {}
        d = r.get("recall@1_difference")
        ci = f"{d['difference']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if d else ""
        rows.append(row(other["name"], r, s, ci))
    where = ""
    if section["paragraphs"]:
        where = f"{section['paragraphs']} SQuAD paragraphs ({section['retrieval_source']})"
    return "\n".join([*lines, f"Retrieval: {where}; STS pairs: {section['sts_pairs']}.", "", *rows]) + "\n"
