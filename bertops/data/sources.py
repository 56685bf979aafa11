"""Corpus sources: read csv/tsv/jsonl/parquet files, resolve where a corpus comes from, and
`ingest` it into `data/raw/<dataset>/` as the untouched source bytes plus a manifest.

Raw files are copied byte for byte, so that `validate` sees exactly what the source held
(bad encodings included) and DVC versions the real input.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from bertops.atomic import replace_dir
from bertops.config import Config, IngestConfig
from bertops.errors import BertopsError
from bertops.lineage import files_sha256

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
SPLIT_NAMES = {"train": ("train",), "eval": ("eval", "dev", "validation", "valid", "test")}
MANIFEST = "manifest.json"


class DataSourceError(BertopsError, RuntimeError):
    """A corpus that cannot be found or read; the message says what to pass instead."""


@dataclass(frozen=True)
class IngestResult:
    dataset: str
    source: str  # where the corpus came from (folder, file or hub id)
    out_dir: str
    files: dict[str, str]  # split -> file name inside out_dir
    data_hash: str  # sha256 over the raw files (content version of the corpus)


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataSourceError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(set(FORMATS))}"
        ) from None


def read_table(path: Path) -> pd.DataFrame:
    """Read one file into string columns, replacing undecodable bytes with U+FFFD.

    Nothing is coerced: empty cells stay "" (not NaN), "NA" stays "NA", and bytes that are not
    UTF-8 survive as lone surrogates so that validation can point at the exact rows.
    """
    fmt = file_format(path)
    if path.stat().st_size == 0:
        return pd.DataFrame()
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        return frame.apply(lambda col: col.map(lambda v: None if pd.isna(v) else str(v)))
    text = path.read_bytes().decode("utf-8", errors="replace")
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataSourceError(f"{path}:{number}: not a JSON object per line ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataSourceError(f"{path}:{number}: each line must be a JSON object, got {type(row).__name__}")
            rows.append({k: (None if v is None else str(v)) for k, v in row.items()})
        return pd.DataFrame(rows)
    sep = "\t" if fmt == "tsv" else ","
    try:
        return pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            # GLUE-style TSVs contain bare quotes inside sentences.
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except pd.errors.ParserError as exc:
        raise DataSourceError(f"{path}: cannot parse as {fmt}: {exc}") from None


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
    if cfg.path is not None:
        path = cfg.path if cfg.path.is_absolute() else root / cfg.path
        if path.is_file():
            if cfg.task == "classification":
                file_format(path)
            return {"train": path}
        if path.is_dir():
            return named_files(path, cfg.files) if cfg.files else find_split_files(path)
        raise DataSourceError(f"ingest.path={cfg.path}: no such file or folder")
    for candidate in cfg.search_paths:
        expanded = os.path.expandvars(candidate)
        if "$" in expanded:  # an unset environment variable
            continue
        folder = Path(expanded)
        folder = folder if folder.is_absolute() else root / folder
        if folder.is_dir():
            return named_files(folder, cfg.files) if cfg.files else find_split_files(folder)
    return None


def named_files(folder: Path, files: dict[str, str]) -> dict[str, Path]:
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
    files = {}
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
        local = resolve_local(cfg, root)
        if local is not None:
            files = {}
            for split, src in local.items():
                name = f"{split}{src.suffix.lower()}"
                shutil.copyfile(src, staging / name)
                files[split] = name
            source = str((local["train"].parent if len(local) > 1 or cfg.path is None else local["train"]).resolve())
        elif cfg.hub_id:
            try:
                files = _download_hub(cfg, staging)
            except DataSourceError:
                raise
            except Exception as exc:  # network, auth, unknown id: all end the same way for the user
                raise DataSourceError(
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
        result = IngestResult(cfg.dataset, source, str(out_dir), files, data_hash)
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


def raw_manifest(config: Config, root: Path = Path(".")) -> tuple[Path, dict]:
    """(the ingested corpus's folder, its manifest); an error saying to ingest first if there is none."""
    out_dir = root / config.paths.raw / config.ingest.dataset
    if not (out_dir / MANIFEST).is_file():
        raise DataSourceError(f"{out_dir} holds no ingested corpus; run `bertops ingest` first")
    return out_dir, json.loads((out_dir / MANIFEST).read_text())


def load_raw(config: Config, root: Path = Path(".")) -> tuple[dict[str, pd.DataFrame], dict]:
    """The ingested splits as frames (source column names) and the ingest manifest."""
    out_dir, manifest = raw_manifest(config, root)
    frames = {split: read_table(out_dir / name) for split, name in manifest["files"].items()}
    return frames, manifest
