"""`distill`: knowledge distillation of a fine-tuned classifier into a smaller, faster student.

The loss is Hinton et al.'s soft-target loss plus the hard-label loss:
    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)
optionally plus `hidden_weight` * MSE between each student layer's output and its teacher layer's
(TinyBERT-style transfer; same width only). The student is the teacher with fewer encoder
layers, initialised from a subset of the teacher's layers (DistilBERT's recipe), or a narrower
encoder trained from scratch when `distill.hidden_size` is set.

It is the fine-tuning loop (`train_loop`) with another model and another loss, so it
checkpoints, resumes and runs on Ray workers like `finetune`. Without hidden-state transfer the
teacher's logits are computed once for the whole training split (eval mode: they do not change),
so each step costs a student step only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from bertops.config import Config, ConfigError
from bertops.training.loop import TrainingSpec, TrainResult, train_loop
from bertops.training.predict import accuracy_score, predict_logits

if TYPE_CHECKING:
    from transformers import BertConfig, PreTrainedModel


def teacher_dir(config: Config, root: Path) -> Path:
    """The teacher's folder: distill.teacher, "production" (the registry's production model: the
    student may then replace it under gate.speed_trade), or null = what finetune wrote."""
    teacher = config.distill.teacher
    if teacher == "production":
        from bertops.model_store import production_model

        found = production_model(config, root)
        if found is None:
            raise ConfigError(
                f"distill.teacher=production, but {config.package.model_name!r} has no production version yet; "
                "promote a model first or name a teacher folder"
            )
        return found[1]
    path = Path(teacher) if teacher else config.paths.models / config.ingest.dataset
    return path if path.is_absolute() else root / path


def student_dir(config: Config, root: Path) -> Path:
    return root / config.paths.models / f"{config.ingest.dataset}-student"


def layer_map(teacher_layers: int, student_layers: int, how: str) -> list[int]:
    """Which teacher layer initialises (and, with hidden transfer, teaches) each student layer.

    every-other: evenly spaced and ending at the top layer (6 -> 3: [1, 3, 5]); first; last."""
    if student_layers > teacher_layers:
        raise ConfigError(
            f"distill.student_layers={student_layers} exceeds the teacher's {teacher_layers} layers; "
            "a student must be smaller than its teacher"
        )
    if how == "first":
        return list(range(student_layers))
    if how == "last":
        return list(range(teacher_layers - student_layers, teacher_layers))
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def build_student(
    teacher: PreTrainedModel, layers: int, how: str, hidden_size: int | None
) -> tuple[nn.Module, list[int]]:
    """(student, teacher layer index per student layer). Same architecture class and head as the teacher."""
    import copy

    from transformers import AutoModelForSequenceClassification

    from bertops.models.modeling_bertops import (
        MeanPoolingBertForSequenceClassification,
        SiameseBertForSequenceClassification,
    )

    mapping = layer_map(teacher.config.num_hidden_layers, layers, how)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = layers
    if hidden_size is not None:
        heads = max(1, hidden_size // 64)
        if hidden_size % heads:
            raise ConfigError(
                f"distill.hidden_size={hidden_size} must be a multiple of 64 (one attention head per "
                "64 dimensions), e.g. 128, 256 or 384"
            )
        config.hidden_size, config.num_attention_heads, config.intermediate_size = hidden_size, heads, 4 * hidden_size
    # bertops' own heads (mean pooling, siamese) by class; anything else through the Auto class
    own = {
        cls.__name__: cls for cls in (MeanPoolingBertForSequenceClassification, SiameseBertForSequenceClassification)
    }
    head = own.get((teacher.config.architectures or [""])[0])
    student = (
        head(cast("BertConfig", config))  # a bertops head's config is a BertConfig (its config_class)
        if head
        else AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    )
    if hidden_size is None:  # copy embeddings, the mapped layers and the head
        state = teacher.state_dict()
        renamed = {}
        for key, value in state.items():
            if ".encoder.layer." in key:
                prefix, rest = key.split(".encoder.layer.", 1)
                index, tail = rest.split(".", 1)
                if int(index) not in mapping:
                    continue
                key = f"{prefix}.encoder.layer.{mapping.index(int(index))}.{tail}"
            renamed[key] = value
        missing, unexpected = student.load_state_dict(renamed, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"could not initialise the student from the teacher (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}); use distill.hidden_size to train one from scratch"
            )
    return student, mapping


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels); T^2 keeps the
    soft-target gradients on the scale of the hard ones (Hinton et al., 2015)."""
    t = temperature
    soft = (
        nn.functional.kl_div(
            nn.functional.log_softmax(student_logits.float() / t, dim=-1),
            nn.functional.log_softmax(teacher_logits.float() / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )
    hard = nn.functional.cross_entropy(student_logits.float(), labels)
    return alpha * soft + (1 - alpha) * hard


def distill(config: Config, root: Path = Path(".")) -> TrainResult:
    """Train models/<dataset>-student from the teacher on the prepared corpus."""
    from bertops.data.prepare import load_prepared
    from bertops.models.classifier import load_classifier, verify_weights
    from bertops.models.pretrained import describe_model_source, load_tokenizer

    cfg = config.distill
    if config.ingest.task != "classification":
        raise ConfigError(
            f"distill handles classification models; ingest.task={config.ingest.task!r} is not supported yet"
        )
    source = teacher_dir(config, root)
    teacher_lineage = verify_weights(source)  # a damaged teacher teaches nothing
    teacher, teacher_tokenizer = load_classifier(source)
    _, id2label, meta = load_prepared(config, root)
    labels = [id2label[i] for i in range(len(id2label))]
    if [teacher.config.id2label[i] for i in range(teacher.config.num_labels)] != labels:
        raise ConfigError(
            f"the teacher {source} predicts {list(teacher.config.id2label.values())}, the corpus has "
            f"{labels}: distil a teacher fine-tuned on this corpus's labels"
        )
    if teacher_tokenizer.get_vocab() != load_tokenizer(meta["tokenizer"]).get_vocab():
        raise ConfigError(
            f"the teacher {source} uses another vocabulary than the prepared corpus "
            f"({meta['tokenizer']}); prepare the corpus with the teacher's tokenizer"
        )
    if teacher.config.model_type != "bert":
        raise ConfigError(f"distill needs a BERT teacher, {source} is {teacher.config.model_type!r}")
    if cfg.hidden_weight and (teacher.config.architectures or [""])[0] == "SiameseBertForSequenceClassification":
        raise ConfigError(
            f"distill.hidden_weight > 0 matches the student's token states to the teacher's, but {source} "
            "is a siamese pair model (two encoder views per pair); set distill.hidden_weight=0"
        )
    mapping = layer_map(teacher.config.num_hidden_layers, cfg.student_layers, cfg.layer_map)
    student_width = cfg.hidden_size or teacher.config.hidden_size
    cached: dict[str, torch.Tensor] = {}

    def prepare(
        _model: nn.Module, train_ids: list[list[int]], _labels: list, device: torch.device, precision: str
    ) -> None:
        teacher.to(device).eval()
        if not cfg.hidden_weight:  # the teacher's logits never change: compute them once
            cached["logits"] = torch.from_numpy(
                predict_logits(
                    teacher,
                    train_ids,
                    teacher_tokenizer.pad_token_id,
                    config.evaluate.batch_size,
                    device,
                    precision,
                    teacher_tokenizer.sep_token_id,
                )
            )

    def loss(model: nn.Module, batch, index: np.ndarray) -> torch.Tensor:
        if not cfg.hidden_weight:
            student_logits = model(**batch.inputs()).logits
            return distillation_loss(
                student_logits,
                cached["logits"][index].to(student_logits.device),
                batch.labels,
                cfg.temperature,
                cfg.alpha,
            )
        with torch.no_grad():
            teacher_out = teacher(**batch.inputs(), output_hidden_states=True)
        student_out = model(**batch.inputs(), output_hidden_states=True)
        total = distillation_loss(student_out.logits, teacher_out.logits, batch.labels, cfg.temperature, cfg.alpha)
        mask = batch.attention_mask.unsqueeze(-1).float()
        # hidden_states[0] is the embedding output; student layer i teaches from teacher layer mapping[i]
        for i, j in enumerate(mapping):
            diff = (student_out.hidden_states[i + 1] - teacher_out.hidden_states[j + 1]) * mask
            total = total + cfg.hidden_weight * diff.pow(2).sum() / (mask.sum() * diff.shape[-1])
        return total

    run = TrainingSpec(
        stage="distill",
        section=cfg,
        tokenizer=meta["tokenizer"],
        out_dir=student_dir(config, root),
        # built after the loop has seeded the RNGs (a from-scratch student's init is reproducible)
        build=lambda _: build_student(teacher, cfg.student_layers, cfg.layer_map, cfg.hidden_size)[0],
        parent=describe_model_source(str(source)),
        loss=loss,
        prepare=prepare,
        score=accuracy_score(
            teacher_tokenizer.pad_token_id, teacher_tokenizer.sep_token_id, config.evaluate.batch_size
        ),
        lineage={
            "teacher": {
                "path": str(source),
                "model_sha256": teacher_lineage.get("model_sha256"),
                "layers": teacher.config.num_hidden_layers,
                "hidden_size": teacher.config.hidden_size,
            },
            "student": {
                "layers": cfg.student_layers,
                "from_teacher_layers": None if cfg.hidden_size else mapping,
                "hidden_size": student_width,
            },
            "distillation": {"temperature": cfg.temperature, "alpha": cfg.alpha, "hidden_weight": cfg.hidden_weight},
        },
    )
    return train_loop(config, root, run)


def run_distill(config: Config, root: Path = Path(".")) -> TrainResult:
    """`bertops distill`: this process, or `distill.num_workers` Ray Train workers."""
    if config.distill.num_workers == 0:
        return distill(config, root)
    from bertops.training.ray_adapter import run_on_ray

    cfg = config.distill
    run_on_ray(
        config,
        root,
        LOOP,
        stage="distill",
        data_key="prepared",
        data_name=config.ingest.dataset,
        num_workers=cfg.num_workers,
        device=cfg.device,
    )
    return TrainResult.from_report(root / config.paths.reports / "distill" / "metrics.json", student_dir(config, root))


LOOP = "bertops.training.distill:distill"  # what each Ray worker runs
DISABLED_NOTE = "distillation is disabled (distill.enabled=false); the fine-tuned model is the candidate\n"


def distill_stage(config: Config, root: Path = Path(".")) -> dict:
    """The pipeline's distill stage: distil when `distill.enabled`, else leave a note (DVC wants
    the output to exist; a student distilled earlier by hand is left alone)."""
    if config.distill.enabled:
        from dataclasses import asdict

        return {k: v for k, v in asdict(run_distill(config, root)).items() if k != "history"}
    folder = student_dir(config, root)
    if not folder.exists():
        folder.mkdir(parents=True)
        (folder / "DISABLED").write_text(DISABLED_NOTE)
    return {"enabled": False}
