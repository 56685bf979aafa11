from pathlib import Path

import pytest
import yaml

from bertops.config import ConfigError, config_from_dict, load_config
from tests.conftest import REPO

PARAMS = REPO / "params.yaml"


def tree() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_params_yaml_loads_with_the_documented_defaults():
    cfg = load_config(PARAMS)
    assert cfg.ingest.dataset == "sst2"
    assert cfg.finetune.model == "packaged"
    assert cfg.validate_.max_duplicate_rate == tree()["validate"]["max_duplicate_rate"]


def test_dotted_overrides_take_their_natural_type():
    cfg = load_config(PARAMS, overrides=["finetune.lr=3e-5", "finetune.epochs=3", "finetune.progress=false"])
    assert cfg.finetune.lr == pytest.approx(3e-5)
    assert cfg.finetune.epochs == 3 and cfg.finetune.progress is False


def test_profile_is_laid_over_params():
    cfg = load_config(PARAMS, REPO / "configs" / "smoke.yaml")
    assert cfg.prepare.max_train_rows == 400
    assert cfg.finetune.lr == load_config(PARAMS).finetune.lr  # untouched keys keep params.yaml values


def test_a_profile_s_search_space_replaces_params_yaml_s(tmp_path: Path):
    """tune.space's keys are data: a profile naming a space searches that space, not its union with
    params.yaml's (which would sample keys the profile left out)."""
    profile = tmp_path / "search.yaml"
    profile.write_text("tune:\n  space:\n    finetune.lr: {loguniform: [5.0e-6, 5.0e-5]}\n")
    assert len(load_config(PARAMS).tune.space) > 1
    assert load_config(PARAMS, profile).tune.space == {"finetune.lr": {"loguniform": [5.0e-6, 5.0e-5]}}


@pytest.mark.parametrize(
    "override, names",
    [
        ("finetune.lrr=1e-4", "finetune.lrr"),
        ("nosuch.key=1", "nosuch"),
        ("finetune.epochs=two", "finetune.epochs"),
        ("finetune.epochs=0", "finetune.epochs"),
        ("finetune.epochs=2.5", "finetune.epochs"),
        ("validate.max_duplicate_rate=1.5", "validate.max_duplicate_rate"),
        ("finetune.device=tpu", "finetune.device"),
        ("finetune.layer_decay=0", "finetune.layer_decay"),
        ("finetune.layer_decay=1.2", "finetune.layer_decay"),
    ],
)
def test_bad_values_fail_at_load_time_naming_the_key(override, names):
    with pytest.raises(ConfigError) as err:
        load_config(PARAMS, overrides=[override])
    assert names in str(err.value)


def test_override_without_equals_is_explained():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(PARAMS, overrides=["finetune.lr"])


def test_unknown_key_in_a_profile_file_is_an_error(tmp_path: Path):
    profile = tmp_path / "p.yaml"
    profile.write_text("finetune:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="finetune.learning_rate"):
        load_config(PARAMS, profile)


def test_cross_field_rules():
    bad = tree()
    bad["validate"]["min_text_chars"] = 50
    bad["validate"]["max_text_chars"] = 10
    with pytest.raises(ConfigError, match="min_text_chars"):
        config_from_dict(bad)


def test_missing_key_is_named():
    bad = tree()
    del bad["gate"]["max_ece"]
    with pytest.raises(ConfigError, match=r"gate.max_ece: required key is missing"):
        config_from_dict(bad)


def test_label_map_keys_can_be_overridden():
    cfg = load_config(PARAMS, overrides=["ingest.labels={neg: negative, pos: positive}"])
    assert list(cfg.ingest.labels) == ["neg", "pos"]
