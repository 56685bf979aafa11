"""`ingest`: copy a corpus from its source (a local file or folder of csv/tsv/jsonl/parquet, a folder
on `ingest.search_paths`, or a Hugging Face dataset id) into `data/raw/<dataset>/` as the
untouched source bytes plus a manifest.

Raw files are copied byte for byte, so that `validate` sees exactly what the source held
(bad encodings included) and DVC versions the real input."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bertops.atomic import replace_dir
from bertops.config import Config, IngestConfig, SplitName
from bertops.data.sources import (
    FORMATS,
    MANIFEST,
    SPLIT_NAMES,
    DataSourceError,
    SourceUnreachable,
    file_format,
    first_search_path,
)
from bertops.errors import is_transient
from bertops.lineage import files_sha256


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    source: str  # where the corpus came from, as params.yaml names it (folder, file or hf://hub id)
    out_dir: str
    files: dict[str, str]  # split -> file name inside out_dir
    data_hash: str  # sha256 over the raw files (content version of the corpus)


def find_split_files(folder: Path) -> dict[str, Path]:
    """Map split -> file for a folder holding train.* and optionally dev/eval/validation/test.*."""
    found: dict[str, Path] = {}
    for split, stems in SPLIT_NAMES.items():
        for stem in stems:
            matches = sorted(p for p in folder.iterdir() if p.stem == stem and p.suffix.lower() in FORMATS)
            if matches:
                found[split] = matches[0]
                break
    if "train" not in found:
        raise DataSourceError(
            f"{folder}: no train file; expected train.csv/tsv/jsonl/parquet (and optionally dev/eval/validation/test.*)"
        )
    return found


def resolve_local(cfg: IngestConfig, root: Path) -> dict[str, Path] | None:
    """The local files the config points at: `path` first, then the first existing search path."""
    found = _local_source(cfg, root)
    return found[1] if found else None


def _local_source(cfg: IngestConfig, root: Path) -> tuple[str, dict[str, Path]] | None:
    """(the source as params.yaml names it, its files): `ingest.path`, or the search path that
    matched with its $VARIABLES unexpanded, so the name is the same in every clone."""
    if cfg.path is not None:
        path = cfg.path if cfg.path.is_absolute() else root / cfg.path
        if path.is_file():
            if cfg.task == "classification":
                file_format(path)
            return str(cfg.path), {"train": path}
        if path.is_dir():
            return str(cfg.path), named_files(path, cfg.files) if cfg.files else find_split_files(path)
        raise DataSourceError(f"ingest.path={cfg.path}: no such file or folder")
    found = first_search_path(cfg.search_paths, root)
    if found is None:
        return None
    entry, folder = found
    return entry, named_files(folder, cfg.files) if cfg.files else find_split_files(folder)


def named_files(folder: Path, files: dict[SplitName, str]) -> dict[str, Path]:
    """The split files `ingest.files` names, all of which must exist."""
    missing = [name for name in files.values() if not (folder / name).is_file()]
    if missing:
        raise DataSourceError(
            f"{folder}: no {', '.join(missing)} (named by ingest.files {files}); fix ingest.files "
            "or point ingest.search_paths / ingest.path at the folder holding them"
        )
    if "train" not in files:
        raise DataSourceError(f"ingest.files {files} names no train file; add train: <file name>")
    return {split: folder / name for split, name in files.items()}


def _download_hub(cfg: IngestConfig, dest: Path) -> dict[str, str]:
    try:
        import datasets  # heavy; only needed for hub sources
    except ImportError as exc:
        raise DataSourceError("reading a hub dataset needs the `datasets` package: pip install datasets") from exc
    files: dict[str, str] = {}
    for split, hub_split in cfg.hub_splits.items():
        if cfg.task == "ner":  # token lists + ClassLabel tags -> a two-column CoNLL file
            rows = datasets.load_dataset(cfg.hub_id, cfg.hub_config, split=hub_split)
            names = rows.features["ner_tags"].feature.names
            lines = []
            for row in rows:
                lines += [f"{token} {names[tag]}" for token, tag in zip(row["tokens"], row["ner_tags"])] + [""]
            (dest / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            files[split] = f"{split}.txt"
            continue
        frame = datasets.load_dataset(cfg.hub_id, cfg.hub_config, split=hub_split).to_pandas()
        name = f"{split}.parquet"
        frame.to_parquet(dest / name, index=False)
        files[split] = name
    return files


def ingest(config: Config, root: Path = Path(".")) -> IngestResult:
    """Copy the corpus into data/raw/<dataset>/ atomically (a failed ingest leaves the old copy)."""
    cfg = config.ingest
    out_dir = root / config.paths.raw / cfg.dataset
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cfg.dataset}-", dir=out_dir.parent))
    try:
        found = _local_source(cfg, root)
        if found is not None:
            # named as params.yaml names it, not by where this clone or the datasets folder lie:
            # the manifest is part of the corpus version DVC hashes
            source, local = found
            files = {}
            for split, src in local.items():
                name = f"{split}{src.suffix.lower()}"
                shutil.copyfile(src, staging / name)
                files[split] = name
        elif cfg.hub_id:
            try:
                files = _download_hub(cfg, staging)
            except DataSourceError:
                raise
            except Exception as exc:  # network, auth, unknown id: one message; a retry only for the network
                error = SourceUnreachable if is_transient(exc) else DataSourceError
                raise error(
                    f"corpus {cfg.dataset!r}: no local copy found (ingest.path is unset; searched "
                    f"{cfg.search_paths}) and the hub dataset {cfg.hub_id!r} could not be loaded "
                    f"({type(exc).__name__}: {str(exc)[:200]}). Pass a local file or folder with "
                    f"`-s ingest.path=PATH` or set BERTOPS_DATASETS to a folder holding {cfg.dataset}/."
                ) from None
            source = f"hf://{cfg.hub_id}/{cfg.hub_config or ''}".rstrip("/")
        else:
            raise DataSourceError(
                f"corpus {cfg.dataset!r}: no local copy found (searched {cfg.search_paths}) and no "
                "ingest.hub_id is set. Pass `-s ingest.path=PATH` (a csv/tsv/jsonl/parquet file or folder)."
            )
        data_hash = files_sha256([staging / name for name in sorted(files.values())])
        # out_dir likewise as the config names it: the same manifest for every clone and executor
        result = IngestResult(cfg.dataset, source, str(config.paths.raw / cfg.dataset), files, data_hash)
        (staging / MANIFEST).write_text(json.dumps(asdict(result), indent=2) + "\n")
        replace_dir(staging, out_dir)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def source_unchanged(config: Config, root: Path = Path(".")) -> bool:
    """True when the local source resolves to the files already ingested, byte for byte (cheap:
    no copy). Hub sources cannot be checked without downloading them: False."""
    from bertops.lineage import file_sha256

    out_dir = root / config.paths.raw / config.ingest.dataset
    if not (out_dir / MANIFEST).is_file():
        return False
    try:
        local = resolve_local(config.ingest, root)
    except DataSourceError:
        return False
    if local is None:
        return False
    files = json.loads((out_dir / MANIFEST).read_text()).get("files", {})
    if set(files) != set(local):
        return False
    return all(
        files[split] == f"{split}{src.suffix.lower()}"
        and (out_dir / files[split]).is_file()
        and file_sha256(src) == file_sha256(out_dir / files[split])
        for split, src in local.items()
    )
