"""Reading corpora: csv/tsv/jsonl/parquet tables (undecodable bytes kept visible for `validate`) and
the ingested copy in `data/raw/<dataset>/` with its manifest (written by `ingest`)."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bertops.config import Config
from bertops.errors import BertopsError, TransientError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


SPLIT_NAMES = {"train": ("train",), "eval": ("eval", "dev", "validation", "valid", "test")}


MANIFEST = "manifest.json"


class DataSourceError(BertopsError, RuntimeError):
    """A corpus that cannot be found or read; the message says what to pass instead."""


class SourceUnreachable(DataSourceError, TransientError):
    """The corpus's remote source could not be reached (now): a retry may fix it."""


def first_search_path(
    search_paths: list[str], root: Path, holds: Callable[[Path], bool] | None = None
) -> tuple[str, Path] | None:
    """The first entry of a config's `search_paths` naming a folder (that `holds` what is wanted):
    (the entry as written, the folder). $VARIABLES are expanded and an entry naming an unset one is
    skipped; a relative entry is relative to the workspace `root`. The entry as written is what
    outputs record: the same in every clone, wherever the datasets lie."""
    for entry in search_paths:
        expanded = os.path.expandvars(entry)
        if "$" in expanded:  # an unset environment variable
            continue
        folder = Path(expanded) if Path(expanded).is_absolute() else root / expanded
        if folder.is_dir() and (holds is None or holds(folder)):
            return entry, folder
    return None


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
