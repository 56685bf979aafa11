"""The team's state, resolved from config: the registry database (`registry_for`) and the model
store (`ModelStore`, `store_for`), and the production model fetched on demand (`production_model`).

The model store holds one tar file per packaged version, `<store>/<model>/<version>.tar`, at any
fsspec URL: a local folder by default (`<paths.registry>/store`), `s3://`, `gs://`, ... for a team
(`BERTOPS_STORE_URL` or `registry.store`). Its sha256 is recorded in the registry, and every fetch
checks it: a missing or altered artifact is refused, never served. Fetched versions are unpacked
into a local cache (`$BERTOPS_CACHE`, else `<paths.registry>/cache`), so a machine downloads each
version once.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bertops.config import Config
from bertops.errors import BertopsError, TransientError
from bertops.lineage import file_sha256
from bertops.registry import PRUNED, Registry, RegistryError, masked

STORE_ENV = "BERTOPS_STORE_URL"
CACHE_ENV = "BERTOPS_CACHE"
# <store>/<model>/drift-report.json: the last drift check's scores (`bertops monitor` writes it, every
# endpoint worker and replica picks it up as it follows the registry: bertops.follow)
DRIFT_REPORT_KEY = "drift-report"


class StoreError(BertopsError, RuntimeError):
    """A model artifact that cannot be stored or fetched (unreachable store, missing or altered file)."""


class StoreUnreachable(StoreError, TransientError):
    """The model store cannot be reached (now); a retry may succeed."""


def registry_for(config: Config, root: Path = Path(".")) -> Registry:
    """The registry: BERTOPS_REGISTRY_URL, else registry.url, else <paths.registry>/registry.db."""
    from bertops.events import announce

    return Registry.at(root / config.paths.registry, config.registry.url, on_event=announce)


def store_for(config: Config, root: Path = Path(".")) -> ModelStore:
    """The model store: BERTOPS_STORE_URL, else registry.store, else the folder <paths.registry>/store."""
    registry_dir = root / config.paths.registry
    url = os.environ.get(STORE_ENV) or config.registry.store or str((registry_dir / "store").resolve())
    cache = Path(os.environ.get(CACHE_ENV) or registry_dir / "cache")
    return ModelStore(url, cache)


@dataclass(frozen=True)
class ModelStore:
    url: str
    cache: Path

    def _fs(self):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise StoreError(
                f"model store {masked(self.url)} cannot be opened ({exc}); set {STORE_ENV} or registry.store "
                "to a folder or an fsspec URL (s3://..., gs://... need s3fs/gcsfs installed)"
            ) from None
        return fs, path.rstrip("/")

    def _unreachable(self, exc: Exception) -> StoreError:
        return StoreUnreachable(f"cannot use the model store {masked(self.url)}: {exc}; nothing was changed")

    def put(self, name: str, version: str, folder: Path) -> dict:
        """Upload `folder` as `<store>/<name>/<version>.tar`; returns its uri, sha256 and size."""
        fs, base = self._fs()
        with tempfile.TemporaryDirectory(prefix="bertops-store-") as tmp:
            archive = Path(tmp) / f"{version}.tar"
            with tarfile.open(archive, "w") as tar:
                for path in sorted(Path(folder).rglob("*")):
                    if path.is_file():
                        tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
            digest, size = file_sha256(archive), archive.stat().st_size
            target = f"{base}/{name}/{version}.tar"
            try:
                fs.makedirs(f"{base}/{name}", exist_ok=True)
                fs.put_file(str(archive), target + ".partial")
                fs.mv(target + ".partial", target)  # readers see no file or the whole file
            except OSError as exc:
                raise self._unreachable(exc) from None
        return {"uri": self.uri(name, version), "sha256": digest, "bytes": size}

    def uri(self, name: str, version: str) -> str:
        """Where `name:version`'s tar lives in this store (what the registry records at package time)."""
        return f"{self.url.rstrip('/')}/{name}/{version}.tar"

    def exists(self, name: str, version: str) -> bool:
        fs, base = self._fs()
        try:
            return bool(fs.exists(f"{base}/{name}/{version}.tar"))
        except OSError as exc:
            raise self._unreachable(exc) from None

    def fetch(self, name: str, version: str, sha256: str) -> Path:
        """The unpacked folder of `name:version` in the local cache, downloading it if needed; its
        tar must hash to `sha256` (the registry's record), or it is refused."""
        local = self.cache / name / f"{version}-{sha256[:12]}"
        if (local / ".complete").is_file():
            return local
        fs, base = self._fs()
        source = f"{base}/{name}/{version}.tar"
        local.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{version}-", dir=local.parent) as tmp:
            archive = Path(tmp) / "model.tar"
            try:
                fs.get_file(source, str(archive))
            except FileNotFoundError:
                raise StoreError(
                    f"{name}:{version} is missing from the model store ({masked(self.url)}/{name}/{version}.tar); "
                    "restore it or promote another version"
                ) from None
            except OSError as exc:
                raise self._unreachable(exc) from None
            found = file_sha256(archive)
            if found != sha256:
                raise StoreError(
                    f"{name}:{version} in the model store does not match the registry (sha256 {found[:12]}..., "
                    f"registered {sha256[:12]}...): the artifact was altered or replaced; it is not loaded"
                )
            unpacked = Path(tmp) / "model"
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")  # refuses absolute paths, '..' and links out
            (unpacked / ".complete").write_text(sha256 + "\n")
            try:
                os.rename(unpacked, local)
            except OSError:  # another process unpacked it first
                if not (local / ".complete").is_file():
                    raise
        return local

    def read_state(self, name: str, key: str) -> dict:
        """A small JSON document the team shares beside the versions (`<store>/<name>/<key>.json`,
        e.g. when drift last started a retrain); {} when there is none yet."""
        fs, base = self._fs()
        try:
            with fs.open(f"{base}/{name}/{key}.json", "r") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise self._unreachable(exc) from None

    def write_state(self, name: str, key: str, doc: dict) -> None:
        fs, base = self._fs()
        target = f"{base}/{name}/{key}.json"
        try:
            fs.makedirs(f"{base}/{name}", exist_ok=True)
            with fs.open(target + ".partial", "w") as fh:
                fh.write(json.dumps(doc) + "\n")
            fs.mv(target + ".partial", target)
        except OSError as exc:
            raise self._unreachable(exc) from None

    def delete(self, name: str, version: str) -> bool:
        """Remove `<store>/<name>/<version>.tar`, the drift windows its endpoints shared
        (`<store>/<name>/windows/<version>/`) and its cached copies here; False when the tar was
        gone already."""
        fs, base = self._fs()
        removed = True
        try:
            fs.rm(f"{base}/{name}/{version}.tar")
        except FileNotFoundError:
            removed = False
        except OSError as exc:
            raise self._unreachable(exc) from None
        try:
            fs.rm(f"{base}/{name}/windows/{version}", recursive=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._unreachable(exc) from None
        for cached, entry in self._cached(name):
            if cached == version:
                shutil.rmtree(entry, ignore_errors=True)
        return removed

    def remove_cached(self, name: str, keep: set[str]) -> None:
        """Drop cached versions of `name` other than `keep` (an endpoint after a switch)."""
        for cached, entry in self._cached(name):
            if cached not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def _cached(self, name: str) -> list[tuple[str, Path]]:
        """(version, folder) of each unpacked version of `name` in the cache (`<version>-<sha256[:12]>`;
        dot-folders are unpacks in progress)."""
        folder = self.cache / name
        entries = folder.iterdir() if folder.is_dir() else []
        return [(e.name.rsplit("-", 1)[0], e) for e in entries if e.is_dir() and not e.name.startswith(".")]


def fetch_version(
    config: Config, version: str, root: Path = Path("."), registry: Registry | None = None, name: str | None = None
) -> Path:
    """The local folder of a registered version of `name` (default: package.model_name), from the
    model store (checked against its sha256)."""
    registry = registry or registry_for(config, root)
    name = name or config.package.model_name
    record = registry.versions(name).get(version)
    if record is None:
        raise RegistryError(f"model {name!r} has no version {version!r}")
    if record["stage"] == PRUNED:
        raise RegistryError(f"{name}:{version} was pruned: its artifact is deleted; package that model again")
    artifact = record.get("artifact")
    if artifact:
        return store_for(config, root).fetch(name, version, artifact["sha256"])
    return _bentoml_store_path(record["model_tag"])  # a version packaged before the model store


def production_model(config: Config, root: Path = Path(".")) -> tuple[str, Path] | None:
    """(version, local folder) of the production model, fetched from the store; None before the first."""
    registry = registry_for(config, root)
    version = registry.production(config.package.model_name)
    if version is None:
        return None
    return version, fetch_version(config, version, root, registry)


def _bentoml_store_path(tag: str) -> Path:
    import bentoml

    try:
        return Path(bentoml.models.get(tag).path)
    except bentoml.exceptions.NotFound:
        raise StoreError(
            f"model {tag} is in neither the model store nor the BentoML store "
            f"({os.environ.get('BENTOML_HOME', '~/bentoml')}); restore it or promote another version"
        ) from None
