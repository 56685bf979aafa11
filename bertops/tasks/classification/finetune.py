"""What the shared loop trains for classification: a head (cls / mean / siamese pooling) on
`finetune.model`, selected on validation accuracy."""

from __future__ import annotations

from pathlib import Path

from bertops.config import Config
from bertops.models.classifier import build_classifier, fit_pair_head
from bertops.models.pretrained import describe_model_source, load_tokenizer, resolve_model_source
from bertops.training.loop import TrainingSpec
from bertops.training.predict import accuracy_score


def training_spec(config: Config, root: Path) -> TrainingSpec:
    """A sequence-classification head on `finetune.model`, selected on validation accuracy."""
    cfg = config.finetune
    tokenizer = load_tokenizer(cfg.model)
    lineage: dict = {}

    def probe_head(model, train_ids, train_labels, device, precision) -> None:
        """finetune.pooling=siamese: start from a head fit to the frozen encoder (linear probe)."""
        lineage["linear_probe"] = fit_pair_head(
            model,
            train_ids,
            train_labels,
            tokenizer.pad_token_id,
            tokenizer.sep_token_id,
            device,
            config.evaluate.batch_size,
        )

    loss = None
    if cfg.embedding_preservation > 0:
        from bertops.training.preserve import preserving_loss

        loss = preserving_loss(resolve_model_source(cfg.model), cfg.embedding_preservation)
        lineage["embedding_preservation"] = cfg.embedding_preservation
    return TrainingSpec(
        stage="finetune",
        section=cfg,
        tokenizer=cfg.model,
        parent=describe_model_source(cfg.model),
        build=lambda id2label: build_classifier(cfg.model, cfg.pooling, id2label, cfg.dropout),
        out_dir=root / config.paths.models / config.ingest.dataset,
        prepare=probe_head if cfg.pooling == "siamese" else None,
        evaluate_start=cfg.pooling == "siamese",
        lineage=lineage,
        loss=loss,
        score=accuracy_score(tokenizer.pad_token_id, tokenizer.sep_token_id, config.evaluate.batch_size),
    )
