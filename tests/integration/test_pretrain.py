"""A short real pretraining run (MLM + NSP) on the WikiText-2 files, then a fine-tune from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import smoke_config

pytestmark = pytest.mark.integration
NSP_FLOOR = 0.8  # held-out NSP accuracy on the topical corpus; chance is 0.5


def _config(datasets: Path, extra: list[str] = ()):
    return smoke_config(
        [
            f"pretrain.search_paths=['{datasets / 'wikitext-2-raw'}']",
            "pretrain.model=tiny",
            "pretrain.vocab_size=3000",
            "pretrain.steps=40",
            "pretrain.batch_size=16",
            "pretrain.max_length=64",
            "pretrain.log_every=10",
            "pretrain.checkpoint_every=0",
            "pretrain.lr=1e-3",
            "pretrain.progress=false",
            *extra,
        ]
    )


def test_pretrain_then_finetune_from_it(datasets: Path, trained_workspace, tmp_path: Path, monkeypatch):
    """The pipeline's chain: pretrain.enabled + finetune.model=pretrained."""
    from transformers import BertForPreTraining

    from bertops.pretraining.run import ensure_prepared, pretrain_stage

    monkeypatch.chdir(tmp_path)  # finetune.model=pretrained is a workspace-relative folder
    cfg = _config(datasets, ["pretrain.enabled=true", "finetune.model=pretrained"])
    meta = ensure_prepared(cfg, tmp_path)
    train, heldout = meta["splits"]["train"], meta["splits"]["heldout"]
    assert train["documents"] > 50 and train["examples"] > 1000 and heldout["examples"] > 1000
    assert 0.4 < train["is_next_share"] < 0.6 and train["unk_share"] < 0.01 and heldout["unk_share"] < 0.05
    assert (tmp_path / "data/pretrain/wikitext2-mini/tokenizer/vocab.txt").is_file()
    # the source as params.yaml names it (a DVC output: the same in every clone)
    assert meta["source"]["train"] == f"{datasets / 'wikitext-2-raw'}/{cfg.pretrain.train_file}"

    assert ensure_prepared(cfg, tmp_path) == meta  # same recipe and source: reused, not rebuilt
    metrics = pretrain_stage(cfg, tmp_path)
    assert metrics["steps"] == 40 and metrics["parameters"] < 2_000_000
    log = (tmp_path / "reports/pretrain/log.csv").read_text().splitlines()[1:]
    assert len(log) == 4
    first, last = (float(line.split(",")[1]) for line in (log[0], log[-1]))
    assert last < first  # the loss goes down within 40 steps
    # A trained vocabulary of 3000: an untrained model's perplexity is in the thousands.
    # (NSP needs far more than 40 steps on WikiText; that it learns is the next test's subject.)
    assert metrics["heldout_mlm_perplexity"] < 1500 and metrics["heldout_examples"] > 1000
    assert 0.01 < metrics["heldout_mlm_accuracy"] < 0.5  # learning, and no label leak
    out = tmp_path / "models/pretrained/wikitext2-mini"
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["kind"] == "pretrained" and lineage["corpus_sha256"] == meta["source_sha256"]
    BertForPreTraining.from_pretrained(out)  # a standard Hugging Face checkpoint

    # Fine-tune the SST-2 smoke corpus from this encoder (its own tokenizer).
    from bertops.data.prepare import prepare
    from bertops.training.finetune import finetune

    source, _, _ = trained_workspace
    for rel in ("data/raw/sst2", "reports/validate"):
        shutil.copytree(source / rel, tmp_path / rel)
    tuned = _config(datasets, ["pretrain.enabled=true", "finetune.model=pretrained", "finetune.max_steps=10"])
    assert tuned.finetune.model == "models/pretrained/wikitext2-mini"
    prepare(tuned, tmp_path)
    result = finetune(tuned, tmp_path)
    assert result.steps == 10
    # The fine-tuned model names its parent: this pretrained checkpoint, pinned by its weights' sha256.
    parent = json.loads((tmp_path / "models/sst2/lineage.json").read_text())["parent_model"]
    assert tuned.finetune.model in parent and lineage["model_sha256"] in parent


def _topical_corpus(path: Path, documents: int, sentences: int, seed: int) -> None:
    """WikiText-format articles, each written in its own small vocabulary ("topic" t: words
    t-a, t-b, ...): a true next sentence shares the first segment's words, a random one (from
    another article) does not, so next-sentence prediction is learnable in a few dozen steps."""
    import random

    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "nu", "pe", "ri", "so", "ta", "ve", "zu"]
    lines = []
    for d in range(documents):
        topic = d % 40
        words = [f"{syllables[topic % 10]}{syllables[topic // 10]}{syllables[k]}" for k in range(10)]
        lines += ["", f" = Article {d} = ", ""]
        text = " ".join(
            " ".join(rng.choices(words, k=rng.randint(6, 10))).capitalize() + " ." for _ in range(sentences)
        )
        lines.append(" " + text + " ")
    path.write_text("\n".join(lines) + "\n")


def test_next_sentence_prediction_learns_what_it_can_see(datasets: Path, tmp_path: Path):
    """The NSP head and its labels are wired right: on a corpus where the next sentence is
    recognisable, held-out NSP accuracy goes far above the 0.5 that shuffled labels, a detached
    head or pairs built wrongly would give."""
    from bertops.pretraining.run import pretrain_stage

    corpus = tmp_path / "topical"
    corpus.mkdir()
    _topical_corpus(corpus / "wiki.valid.raw", documents=200, sentences=16, seed=0)
    _topical_corpus(corpus / "wiki.test.raw", documents=60, sentences=16, seed=1)
    cfg = _config(
        datasets,
        [
            f"pretrain.search_paths=['{corpus}']",
            "pretrain.vocab_size=600",
            "pretrain.max_length=32",
            "pretrain.short_seq_prob=0.0",
            "pretrain.steps=600",  # ~13 s here; 0.93 held-out (at 300 steps still 0.56: it learns late)
            "pretrain.log_every=100",
            "pretrain.enabled=true",
            "finetune.model=pretrained",
        ],
    )
    metrics = pretrain_stage(cfg, tmp_path)
    assert metrics["steps"] == 600 and metrics["heldout_examples"] > 300
    assert metrics["heldout_nsp_accuracy"] >= NSP_FLOOR, metrics


def test_a_changed_recipe_rebuilds_the_prepared_corpus(datasets: Path, tmp_path: Path):
    from bertops.pretraining.run import ensure_prepared

    first = ensure_prepared(_config(datasets, ["pretrain.max_length=32"]), tmp_path)
    second = ensure_prepared(_config(datasets, ["pretrain.max_length=48"]), tmp_path)
    assert first["max_length"] == 32 and second["max_length"] == 48
    assert second["splits"]["train"]["examples"] < first["splits"]["train"]["examples"]  # longer examples, fewer


def test_disabled_stage_leaves_notes_and_keeps_a_model_pretrained_by_hand(datasets: Path, tmp_path: Path):
    from bertops.pretraining.run import pretrain_stage

    cfg = _config(datasets)  # pretrain.enabled=false in params.yaml
    kept = tmp_path / "models/pretrained/wikitext2-mini"
    kept.mkdir(parents=True)
    (kept / "model.safetensors").write_bytes(b"weights")
    assert pretrain_stage(cfg, tmp_path) == {"enabled": False}
    assert (tmp_path / "data/pretrain/wikitext2-mini/DISABLED").is_file()
    assert sorted(p.name for p in kept.iterdir()) == ["model.safetensors"]


def test_enabling_pretraining_requires_finetuning_from_it(datasets: Path):
    from bertops.config import ConfigError

    with pytest.raises(ConfigError, match="finetune.model=pretrained"):
        _config(datasets, ["pretrain.enabled=true"])


def test_pretraining_without_a_corpus_says_what_to_pass(tmp_path: Path, datasets: Path):
    from bertops.data.sources import DataSourceError
    from bertops.pretraining.run import prepare_pretraining

    cfg = _config(datasets, ["pretrain.search_paths=['/nonexistent']", "pretrain.hub_id=null"])
    with pytest.raises(DataSourceError, match="BERTOPS_DATASETS"):
        prepare_pretraining(cfg, tmp_path)


def test_too_few_documents_or_too_long_sequences_are_refused_before_training(tmp_path: Path, datasets: Path):
    from bertops.config import ConfigError
    from bertops.data.sources import DataSourceError
    from bertops.pretraining.run import prepare_pretraining

    corpus = tmp_path / "one-article"
    corpus.mkdir()
    text = " = Only Article = \n This is one sentence . And another one follows here . \n"
    (corpus / "wiki.valid.raw").write_text(text * 3)
    (corpus / "wiki.test.raw").write_text(text)
    with pytest.raises(DataSourceError, match="next-sentence prediction needs at least 2"):
        prepare_pretraining(_config(datasets, [f"pretrain.search_paths=['{corpus}']"]), tmp_path)
    with pytest.raises(ConfigError, match="pretrain.max_length: Input should be less than or equal to 512"):
        _config(datasets, ["pretrain.max_length=600"])  # BERT's position limit, at config load
