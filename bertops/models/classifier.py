"""Build a sequence classifier from a pretrained encoder, and load a saved bertops model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertops.config import ConfigError
from bertops.lineage import ArtifactMismatch
from bertops.models.pretrained import resolve_model_source


def candidate_dir(config, root: Path) -> Path:
    """The model that evaluate, gate and package judge: the distilled student when
    `distill.enabled`, else the fine-tuned model (models/<dataset>)."""
    name = f"{config.ingest.dataset}-student" if config.distill.enabled else config.ingest.dataset
    return root / config.paths.models / name


def checked_candidate(config, root: Path, prepared_hash: str | None) -> tuple[Path, dict]:
    """(candidate folder, its lineage) after checking its weights and that it was trained on this
    prepared corpus: scoring a model on a re-prepared, re-split corpus could put its training rows
    in the eval split and inflate every figure."""
    model_dir = candidate_dir(config, root)
    lineage = verify_weights(model_dir)
    if lineage.get("prepared_hash") != prepared_hash:
        raise ArtifactMismatch(
            f"{model_dir} was trained on prepared corpus {str(lineage.get('prepared_hash'))[:12]}, but "
            f"{config.paths.prepared}/{config.ingest.dataset} is now {str(prepared_hash)[:12]}; re-run "
            f"`bertops {lineage.get('stage', 'finetune')}` (or `dvc repro`) before evaluating"
        )
    return model_dir, lineage


def build_classifier(model: str, pooling: str, id2label: dict[int, str], dropout: float):
    """A fresh head on `model`'s encoder: "cls" = the stock BERT head, "mean" = mean-pooled states,
    "siamese" = the cosine of a pair's two separately encoded sentences (fit its head with
    `fit_pair_head` before training)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = resolve_model_source(model)
    labels: dict[str, Any] = {  # config attributes, passed through from_pretrained's **kwargs
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
        "hidden_dropout_prob": dropout,
    }
    if pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="sdpa", **labels)
    if pooling in ("mean", "siamese"):
        from bertops.models.modeling_bertops import (
            MeanPoolingBertForSequenceClassification,
            SiameseBertForSequenceClassification,
        )

        config = AutoConfig.from_pretrained(source, **labels)
        if config.model_type != "bert":
            raise ConfigError(
                f"finetune.pooling={pooling} needs a BERT encoder, {model!r} is {config.model_type!r}; "
                "use finetune.pooling=cls"
            )
        head = MeanPoolingBertForSequenceClassification if pooling == "mean" else SiameseBertForSequenceClassification
        return head.from_pretrained(source, config=config, attn_implementation="sdpa")
    raise ConfigError(f"unknown finetune.pooling {pooling!r}; choose one of cls, mean, siamese")


def fit_pair_head(
    model, train_ids: list[list[int]], labels: list[int], pad_id: int, sep_id: int, device, batch_size: int = 64
) -> dict:
    """Linear probe, then fine-tune (Kumar et al. 2022): fit a siamese model's head to the frozen
    encoder's cosine similarities of the training pairs by logistic regression, so that training
    starts from the encoder's own pair knowledge instead of a random head whose gradients would
    first scramble it. Returns the probe's training accuracy."""
    import torch

    from bertops.data.batching import collate

    was_training = model.training
    model.eval()
    features = []
    with torch.inference_mode():
        for start in range(0, len(train_ids), batch_size):
            batch = collate(
                train_ids[start : start + batch_size], labels[start : start + batch_size], pad_id, sep_id
            ).to(device)
            inputs = batch.inputs()
            features.append(
                model.similarity(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
                .float()
                .cpu()
            )
    x = torch.cat(features).double()
    y = torch.as_tensor(labels, dtype=torch.long)
    weight = torch.zeros(model.config.num_labels, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(model.config.num_labels, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y) + 1e-4 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.no_grad():
        model.classifier.weight.copy_(weight.to(model.classifier.weight.dtype))
        model.classifier.bias.copy_(bias.to(model.classifier.bias.dtype))
        accuracy = float(((x @ weight.T + bias).argmax(-1) == y).double().mean())
    model.train(was_training)
    return {"probe_train_accuracy": round(accuracy, 4)}


def load_classifier(model_dir: Path, device: str = "cpu"):
    """(model, tokenizer) from a saved bertops sequence classifier, in eval mode.

    trust_remote_code loads the head's code that bertops saved *inside the folder itself*
    (modeling_bertops.py), never code from a hub.
    """
    from transformers import AutoModelForSequenceClassification

    return load_model_folder(model_dir, AutoModelForSequenceClassification, device, trust_remote_code=True)


def load_model_folder(model_dir: Path, head, device: str = "cpu", **kwargs):
    """(model, tokenizer) from a saved bertops model folder with the given Auto* head class, in
    eval mode; a folder that cannot be loaded is an ArtifactMismatch saying how to restore it."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no trained model; run `bertops finetune` first")
    try:
        model = head.from_pretrained(model_dir, attn_implementation="sdpa", **kwargs).to(device)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # truncated weights, bad JSON, missing vocab: all mean a damaged folder
        raise ArtifactMismatch(
            f"{model_dir} is damaged and cannot be loaded ({type(exc).__name__}: "
            f"{str(exc)[:200]}); re-run `bertops finetune`, or restore it with `dvc checkout`"
        ) from None
    return model.eval(), tokenizer


def verify_weights(model_dir: Path) -> dict:
    """The folder's lineage, after checking its weights are the ones the lineage fingerprints."""
    import json

    from bertops.lineage import file_sha256, folder_fingerprint

    lineage_file, weights = model_dir / "lineage.json", model_dir / "model.safetensors"
    if not lineage_file.is_file() or not weights.is_file():
        raise FileNotFoundError(
            f"{model_dir} holds no trained bertops model (lineage.json and model.safetensors); "
            "run `bertops finetune` first"
        )
    try:
        lineage = json.loads(lineage_file.read_text())
    except json.JSONDecodeError:
        raise ArtifactMismatch(
            f"{lineage_file} is not valid JSON; re-run `bertops finetune` or `dvc checkout`"
        ) from None
    if file_sha256(weights) != lineage.get("model_sha256"):
        raise ArtifactMismatch(
            f"{weights} does not match the sha256 recorded in its lineage: the weights were damaged "
            "or replaced; re-run `bertops finetune`, or restore them with `dvc checkout`"
        )
    recorded = lineage.get("files_sha256")
    if recorded is not None:  # models saved before files were fingerprinted carry the weights' hash only
        found = folder_fingerprint(model_dir)
        changed = sorted(name for name in set(recorded) | set(found) if recorded.get(name) != found.get(name))
        if changed:
            raise ArtifactMismatch(
                f"{model_dir}: {', '.join(changed)} changed, appeared or went missing since the model was saved "
                "(config, code and tokenizer are read when it loads); re-run `bertops finetune`, or restore the "
                "folder with `dvc checkout`"
            )
    return lineage
