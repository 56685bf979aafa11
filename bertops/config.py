"""The typed config tree: `params.yaml` (+ an optional profile file + dotted overrides) -> `Config`.

Every default value lives once, in `params.yaml`; the models here only declare types and the
rules a value must obey, so a bad value fails at load time with a message naming its key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bertops.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")

SplitName = Literal["train", "validation", "eval"]  # the splits `ingest.files` / `ingest.hub_splits` may name


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default); no coercion
    # of e.g. "3" into 3 for numbers given in YAML files.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    raw: Path
    prepared: Path
    pretrain_data: Path
    models: Path
    reports: Path
    registry: Path


class IngestConfig(_Section):
    # classification: one text (or a text pair) -> one label; ner: CoNLL tokens -> IOB2 tags;
    # qa: SQuAD v1.1 question + context -> the answer span
    task: str = Field(default="classification", pattern=r"^[a-z][a-z0-9_]*$")  # a registered task (bertops.tasks)
    dataset: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # split -> file name inside the source folder (e.g. CoNLL's train.txt / valid.txt / test.txt);
    # null = find train.* and dev/eval/validation/test.* tables
    files: dict[SplitName, str] | None = None
    path: Path | None
    search_paths: list[str]
    hub_id: str | None
    hub_config: str | None
    hub_splits: dict[SplitName, str]
    text_column: str = Field(min_length=1)
    text_pair_column: str | None = Field(default=None, min_length=1)  # sentence pairs (e.g. RTE's sentence2)
    label_column: str = Field(min_length=1)
    labels: dict[str, str] = Field(min_length=2)

    @model_validator(mode="after")
    def _distinct(self) -> IngestConfig:
        if self.text_column == self.label_column:
            raise ValueError("text_column and label_column must name different columns")
        if self.text_pair_column in (self.text_column, self.label_column):
            raise ValueError("text_pair_column must name a third column (the second sentence of each pair)")
        if len(set(self.labels.values())) != len(self.labels):
            raise ValueError(f"label names must be unique, got {list(self.labels.values())}")
        return self


class ValidateConfig(_Section):
    min_rows: int = Field(ge=1)
    min_text_chars: int = Field(ge=1)
    max_text_chars: int = Field(ge=1)
    max_duplicate_rate: float = Field(ge=0, le=1)
    max_control_char_share: float = Field(ge=0, le=1)
    eval_overlap: Literal["fail", "drop"]
    min_class_share: float = Field(ge=0, le=1)
    max_class_share: float = Field(ge=0, le=1)
    examples_per_failure: int = Field(ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ValidateConfig:
        if self.min_text_chars > self.max_text_chars:
            raise ValueError("min_text_chars must be <= max_text_chars")
        if self.min_class_share > self.max_class_share:
            raise ValueError("min_class_share must be <= max_class_share")
        return self


class PrepareConfig(_Section):
    eval_fraction: float = Field(gt=0, lt=1)
    validation_fraction: float = Field(gt=0, lt=1)
    # classification: random = a stratified share of train's rows; whole_texts = of the texts no other
    # row contains, their phrases leaving train (phrase-level corpora such as SST-2)
    validation_carve: Literal["random", "whole_texts"]
    seed: int
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"]
    lowercase: bool
    max_length: int = Field(ge=8, le=8192)
    max_train_rows: int = Field(ge=0)
    max_eval_rows: int = Field(ge=0)
    doc_stride: int = Field(default=128, ge=1)  # qa: context tokens shared by consecutive windows
    max_query_length: int = Field(default=64, ge=4)  # qa: question tokens kept


class _TrainingSection(_Section):
    """What every training loop shares: optimiser, schedule, clipping, seed, device, checkpoints."""

    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0, lt=1)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    max_grad_norm: float = Field(gt=0)
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    num_threads: int = Field(ge=0)
    checkpoint_every: int = Field(ge=0)
    num_workers: int = Field(ge=0)  # 0 = this process; N >= 1 = N Ray Train workers
    progress: bool


class FinetuneConfig(_TrainingSection):
    model: str = Field(min_length=1)
    pooling: Literal["mean", "cls", "siamese"]
    # > 0: + weight x cosine distance of the mean-pooled embedding to the frozen parent's (classification)
    embedding_preservation: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _preservation_needs_one_pooled_vector(self) -> FinetuneConfig:
        if self.embedding_preservation and self.pooling == "siamese":
            raise ValueError(
                "finetune.embedding_preservation needs finetune.pooling=mean or cls (a siamese head already reads "
                "each sentence's own embedding); set it to 0 or change the pooling"
            )
        return self

    epochs: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    # layer-wise learning-rate decay: encoder layer i trains at lr x layer_decay^(layers - i); 1 = off
    layer_decay: float = Field(default=1.0, gt=0, le=1)
    bucket_size: int = Field(ge=1)
    eval_every: int = Field(ge=0)
    max_steps: int = Field(ge=0)


class DistillConfig(_TrainingSection):
    """Knowledge distillation of a fine-tuned teacher into a smaller student (`bertops distill`)."""

    enabled: bool
    teacher: str | None  # a bertops model folder; null = models/<dataset> (the fine-tuned model)
    student_layers: int = Field(ge=1)
    layer_map: Literal["every-other", "first", "last"]
    hidden_size: int | None = Field(ge=32)  # null = the teacher's (layers copied); else from scratch
    temperature: float = Field(gt=0)
    alpha: float = Field(ge=0, le=1)  # weight of the soft-target loss; 1 - alpha on the hard labels
    hidden_weight: float = Field(ge=0)  # hidden-state transfer (MSE to the mapped teacher layers); 0 = off
    epochs: int = Field(ge=1)
    bucket_size: int = Field(ge=1)
    eval_every: int = Field(ge=0)
    max_steps: int = Field(ge=0)

    @model_validator(mode="after")
    def _transfer_needs_same_width(self) -> DistillConfig:
        if self.hidden_weight and self.hidden_size is not None:
            raise ValueError(
                "distill.hidden_weight > 0 compares student and teacher hidden states, which needs the "
                "teacher's width: set distill.hidden_size=null or distill.hidden_weight=0"
            )
        return self


class SliceConfig(_Section):
    """A named subset of the eval split: every given condition must hold (token counts include
    [CLS]/[SEP]; keywords match whole words, case-insensitively, any of them)."""

    min_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    keywords: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _some_condition(self) -> SliceConfig:
        if self.min_tokens is None and self.max_tokens is None and not self.keywords:
            raise ValueError("a slice needs min_tokens, max_tokens or keywords")
        if self.min_tokens and self.max_tokens and self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must be <= max_tokens")
        return self


PRETRAINED = "pretrained"  # finetune.model value: the encoder that `bertops pretrain` wrote


class PretrainConfig(_TrainingSection):
    enabled: bool
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    train_file: str
    heldout_file: str
    search_paths: list[str]
    hub_id: str | None
    hub_config: str | None
    tokenizer: str
    vocab_size: int = Field(ge=100)
    model: str
    max_length: int = Field(ge=16, le=512)
    short_seq_prob: float = Field(ge=0, le=1)
    mask_prob: float = Field(gt=0, lt=1)
    whole_word_masking: bool
    grad_accum: int = Field(ge=1)
    steps: int = Field(ge=1)
    log_every: int = Field(ge=1)


class RetrievalSetConfig(_Section):
    """Question -> paragraph retrieval on SQuAD v1.1 dev articles (held out from SQuAD's train)."""

    path: Path | None  # a SQuAD JSON file, or a folder holding dev-v1.1.json
    search_paths: list[str]
    hub_id: str | None
    paragraphs: int = Field(ge=10)
    seed: int


class EmbeddingEvalConfig(_Section):
    """How `evaluate` scores the model /embed will serve (serve.embedding_model)."""

    retrieval: RetrievalSetConfig | None
    sts: Path | None  # sentence1, sentence2, score (csv/tsv/jsonl/parquet): Spearman of cosine with the scores
    batch_size: int = Field(ge=1)


class EvaluateConfig(_Section):
    batch_size: int = Field(ge=1)
    ece_bins: int = Field(ge=1)
    slices: dict[str, SliceConfig]
    behaviour: Path | None
    latency_requests: int = Field(ge=10)
    latency_rounds: int = Field(default=5, ge=1)  # alternating rounds the latency is timed in (medians)
    max_answer_tokens: int = Field(default=30, ge=1)  # qa: longest answer span considered
    embedding: EmbeddingEvalConfig | None = None  # null = /embed's model is neither scored nor gated


class BehaviourPolicy(_Section):
    """Minimum pass rate per kind of behavioural case; null = that kind is reported, not gated."""

    mft: float | None = Field(default=None, ge=0, le=1)
    inv: float | None = Field(default=None, ge=0, le=1)
    dir: float | None = Field(default=None, ge=0, le=1)


class SpeedTrade(_Section):
    """Accept a faster challenger that is a little less accurate than production."""

    min_speedup: float = Field(gt=1)  # production p95 / candidate p95, serving path, median over rounds
    min_accuracy_ratio: float = Field(gt=0, le=1)  # lower CI bound of candidate accuracy / production accuracy


class GateConfig(_Section):
    # null = reported by evaluate, not gated
    min_accuracy: float | None = Field(ge=0, le=1)
    min_macro_f1: float | None = Field(ge=0, le=1)
    max_ece: float | None = Field(ge=0, le=1)
    max_p95_latency_ms: float | None = Field(gt=0)
    # with a production model: candidate p95 / production p95, timed in the same alternating rounds
    max_p95_latency_ratio: float | None = Field(default=1.25, gt=0)
    max_model_size_mb: float | None = Field(gt=0)
    min_behaviour_pass_rate: BehaviourPolicy | None
    non_inferiority_margin: float = Field(ge=0, le=1)
    slice_non_inferiority_margin: float = Field(ge=0, le=1)
    min_slice_examples: int = Field(ge=1)
    confidence: float = Field(gt=0, lt=1)
    bootstrap_resamples: int = Field(ge=100)
    min_entity_f1: float | None = Field(default=None, ge=0, le=1)  # ner: entity-level micro F1 on eval
    min_qa_f1: float | None = Field(default=None, ge=0, le=1)  # qa: SQuAD token F1 (0-1) on eval
    speed_trade: SpeedTrade | None  # null = a challenger must always be non-inferior
    # /embed's model vs production's and vs the parent encoder: the CI low of the paired recall@1
    # (and STS Spearman) difference must be >= -embedding_margin; null = reported, not gated
    embedding_margin: float | None = Field(default=0.02, ge=0, le=1)
    min_embedding_recall_at_1: float | None = Field(default=None, ge=0, le=1)


class PackageConfig(_Section):
    model_name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")


class PromoteConfig(_Section):
    stage: Literal["production", "staging"]


class CanaryConfig(_Section):
    window_s: float = Field(gt=0)
    min_requests: int = Field(ge=1)
    max_error_rate: float = Field(ge=0, le=1)
    max_p95_ratio: float = Field(gt=0)


class LiveMonitorConfig(_Section):
    enabled: bool
    window: int = Field(ge=10)
    sample_rate: float = Field(ge=0, le=1)
    sample_dir: str | None
    # every worker and replica shares its window through the model store (bertops_window.Shards)
    share: bool = True
    share_every_s: float = Field(default=10.0, gt=0)
    share_max_age_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _fresh_outlives_a_write(self) -> LiveMonitorConfig:
        if self.share_max_age_s < 4 * self.share_every_s:
            raise ValueError(
                f"serve.monitor.share_max_age_s ({self.share_max_age_s:g}) must be at least 4 x share_every_s "
                f"({self.share_every_s:g}): a live worker's shard (rewritten every 3 x) would drop out between writes"
            )
        return self


class ServeConfig(_Section):
    host: str
    port: int = Field(ge=1, le=65535)
    workers: int = Field(ge=1)
    runtime: Literal["auto", "onnx-int8", "onnx", "torch"]
    max_batch_size: int = Field(ge=1)
    lanes: int = Field(default=0, ge=0)  # model calls side by side; 0 = one per core on CPU, 1 on a GPU
    # a batch runs as the groups of similar length that cost least (serving/engine.py length_groups)
    # None: the runtime's measured cost a CPU thread (ONNX 8, PyTorch 29) x a call's threads;
    # PyTorch on a GPU 1024
    group_call_tokens: float | None = Field(default=None, ge=0)
    max_queued_texts: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1024)
    max_texts_per_request: int = Field(ge=1)
    max_text_chars: int = Field(ge=1)
    normalize_embeddings: bool
    # parent | production | NAME[:VERSION] of a registered embedding version (`bertops package --embedding-only`)
    embedding_model: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*(:[A-Za-z0-9_.-]+)?$")
    api_token_env: str | None = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    poll_s: float = Field(gt=0)
    canary: CanaryConfig
    monitor: LiveMonitorConfig
    admin_token_env: str | None = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    onnx_max_abs_diff: float = Field(gt=0)
    int8_max_accuracy_drop: float = Field(ge=0, le=1)


class MonitorConfig(_Section):
    url: str | None = Field(pattern=r"^https?://")
    alpha: float = Field(gt=0, lt=1)
    min_window: int = Field(ge=10)
    window: int = Field(ge=10)
    permutations: int = Field(ge=99)
    max_embedding_rows: int = Field(ge=50)
    reference_rows: int = Field(ge=50)
    interval_s: float = Field(gt=0)
    cooldown_s: float = Field(ge=0)
    deployment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int


class RegistryConfig(_Section):
    url: str | None  # None = the embedded SQLite file <paths.registry>/registry.db
    store: str | None  # None = the local folder <paths.registry>/store


class ScheduleConfig(_Section):
    cron: str = Field(min_length=9)
    deployment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    lock_wait_s: float = Field(ge=0)


class NotifyConfig(_Section):
    webhook_url: str | None = Field(pattern=r"^https?://")
    on_failure: bool
    on_promotion: bool
    on_drift: bool
    timeout_s: float = Field(gt=0)


class TuneConfig(_Section):
    """`bertops tune`: Ray Tune over finetune's settings (the space is checked key by key, against
    this schema, by `bertops.tuning` before any trial starts)."""

    num_samples: int = Field(ge=1)
    max_concurrent: int = Field(ge=1)
    cpus_per_trial: float = Field(gt=0)
    gpus_per_trial: float = Field(ge=0)
    scheduler: Literal["asha", "fifo"]
    # ASHA's clock: "schedule" = the share of each trial's own optimizer steps done (trials of different
    # lengths are compared at the same point of their learning-rate schedules), "evaluations" = the
    # validation evaluations made.
    rungs: Literal["schedule", "evaluations"] = "schedule"
    grace_period: float = Field(gt=0)  # in the unit of `rungs`: a share in (0, 1), or a whole number of evaluations
    reduction_factor: int = Field(ge=2)
    full_defaults_trial: bool  # ASHA never stops the defaults' trial (it still judges the others)
    seed: int
    name: str | None = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    space: dict[str, dict[str, list[Any]]]

    @model_validator(mode="after")
    def _grace_in_the_rungs_unit(self) -> TuneConfig:
        if self.scheduler != "asha":  # fifo stops nothing: it has no rungs
            return self
        if self.rungs == "schedule" and not self.grace_period < 1:
            raise ValueError(
                f"tune.grace_period={self.grace_period} with tune.rungs=schedule is a share of each trial's "
                "schedule, so it must be below 1 (0.25 = a quarter of its steps); or set tune.rungs=evaluations"
            )
        if self.rungs == "evaluations" and self.grace_period != int(self.grace_period):
            raise ValueError(
                f"tune.grace_period={self.grace_period} with tune.rungs=evaluations counts validation "
                "evaluations, so it must be a whole number (1, 2, ...)"
            )
        return self


class RunsConfig(_Section):
    record: bool  # every `bertops run` in a git + DVC workspace is saved as a DVC experiment


class DashboardConfig(_Section):
    host: str
    port: int = Field(ge=1, le=65535)


class Config(_Section):
    paths: PathsConfig
    ingest: IngestConfig
    validate_: ValidateConfig = Field(alias="validate")
    prepare: PrepareConfig
    finetune: FinetuneConfig
    pretrain: PretrainConfig
    distill: DistillConfig
    evaluate: EvaluateConfig
    gate: GateConfig
    package: PackageConfig
    promote: PromoteConfig
    serve: ServeConfig
    monitor: MonitorConfig
    registry: RegistryConfig
    schedule: ScheduleConfig
    notify: NotifyConfig
    dashboard: DashboardConfig
    tune: TuneConfig
    runs: RunsConfig

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _chain_pretraining(cls, tree: Any) -> Any:
        """`finetune.model: pretrained` = the encoder `pretrain` writes (models/pretrained/<name>);
        with `pretrain.enabled` the flow runs pretrain first, so finetune must start from its output."""
        if not isinstance(tree, dict):
            return tree
        finetune, pretrain = tree.get("finetune") or {}, tree.get("pretrain") or {}
        models = (tree.get("paths") or {}).get("models", "models")
        output = str(Path(models) / "pretrained" / str(pretrain.get("name", "")))
        if finetune.get("model") == PRETRAINED:
            tree["finetune"] = {**finetune, "model": output}
        elif pretrain.get("enabled") and str(finetune.get("model")) != output:
            raise ValueError(
                f"pretrain.enabled=true chains pretrain -> finetune, so finetune.model must be "
                f"'pretrained' (= {output}), not {finetune.get('model')!r}; set finetune.model=pretrained "
                "or pretrain.enabled=false"
            )
        return tree

    @model_validator(mode="after")
    def _siamese_needs_pairs(self) -> Config:
        if self.finetune.pooling == "siamese" and (
            self.ingest.task != "classification" or not self.ingest.text_pair_column
        ):
            raise ValueError(
                "finetune.pooling=siamese encodes the two sentences of a pair apart, so it needs "
                "sentence pairs: set ingest.text_pair_column (task classification), or use "
                "finetune.pooling=mean"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-ready values keyed as in params.yaml (for lineage records)."""
        return self.model_dump(mode="json", by_alias=True)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. finetune.lr=3e-5)")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override key {key!r} must be dotted, section.key (e.g. finetune.lr)")
    # YAML gives the value its natural type: 3e-5 -> float, true -> bool, [a, b] -> list.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        # Scanner/parser errors carry a `problem`; a ReaderError (a control character) does not.
        problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else exc
        raise ConfigError(f"override {item!r}: value is not valid YAML ({problem})") from exc
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)  # YAML 1.1 reads "3e-5" as a string; users mean a number.
    return parts, value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return any(c.isdigit() for c in text)


def _set_dotted(tree: dict[str, Any], parts: list[str], value: Any, source: str) -> None:
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"{source}: unknown config key {where!r}; see params.yaml for the keys")
        node = child
    if parts[-1] not in node and not _is_free_mapping(parts):
        raise ConfigError(f"{source}: unknown config key {'.'.join(parts)!r}; see params.yaml for the keys")
    node[parts[-1]] = value


def _is_free_mapping(parts: list[str]) -> bool:
    # Mappings whose keys are data, not schema (e.g. ingest.labels.<raw value>): a profile's replaces
    # the whole mapping (a search space laid over another would mix the two).
    return parts[:-1] in (
        ["ingest", "labels"],
        ["ingest", "hub_splits"],
        ["ingest", "files"],
        ["evaluate", "slices"],
        ["tune", "space"],
    )


def _merge(base: dict[str, Any], patch: dict[str, Any], source: str, prefix: str = "") -> None:
    for key, value in patch.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown config key {dotted!r}; see params.yaml for the keys")
        if isinstance(value, dict) and isinstance(base[key], dict) and not _is_free_mapping(dotted.split(".") + ["x"]):
            _merge(base[key], value, source, prefix=f"{dotted}.")
        else:
            base[key] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; run from the repository root or pass --params PATH")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    params: Path | str = DEFAULT_PARAMS,
    profile: Path | str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Read params.yaml, lay a profile file (same shape, a subset of keys) and overrides over it."""
    params = Path(params)
    tree = _read_yaml(params)
    if profile is not None:
        _merge(tree, _read_yaml(Path(profile)), source=str(profile))
    for item in overrides:
        parts, value = _parse_override(item)
        _set_dotted(tree, parts, value, source=f"override {item!r}")
    return config_from_dict(tree, source=str(params))


def config_from_dict(tree: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw tree; errors name every bad key with the reason."""
    try:
        return Config.model_validate(copy.deepcopy(tree))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key; remove it or fix its spelling (see params.yaml)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            shown = err["type"] != "missing" and err["loc"]  # a top-level error's input is the whole tree
            lines.append(f"  {key}: {msg} (got {err.get('input')!r})" if shown else f"  {key}: {msg}")
        raise ConfigError(f"invalid config in {source}:\n" + "\n".join(lines)) from None
