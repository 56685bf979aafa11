"""The production model in the team's stores: its version in the registry and its files in the
BentoML model store (the BentoML adapter for reading; `packaging` writes)."""

from __future__ import annotations

import os
from pathlib import Path

from bertops.config import Config
from bertops.registry import Registry, RegistryError


def production_bento(config: Config, root: Path = Path(".")) -> str:
    """The Bento tag of the production version (what `bertops serve` serves)."""
    registry = Registry(root / config.paths.registry)
    name = config.package.model_name
    version = registry.production(name)
    if version is None:
        raise RegistryError(f"model {name!r} has no production version; run the pipeline or `bertops promote VERSION`")
    return registry.versions(name)[version]["bento_tag"]


def production_model(config: Config, root: Path = Path(".")) -> tuple[str, Path] | None:
    """(version, local folder) of the production model in the BentoML store; None before the first."""
    registry = Registry(root / config.paths.registry)
    name = config.package.model_name
    version = registry.production(name)
    if version is None:
        return None
    import bentoml

    tag = registry.versions(name)[version]["model_tag"]
    try:
        return version, Path(bentoml.models.get(tag).path)
    except bentoml.exceptions.NotFound:
        raise RegistryError(
            f"production model {tag} is missing from the BentoML store "
            f"({os.environ.get('BENTOML_HOME', '~/bentoml')}); restore it or promote another version"
        ) from None
