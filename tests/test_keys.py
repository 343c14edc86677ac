"""The table of config keys (core/keys.py) against the configs, run directories, the docs and
the published ablation tree."""

from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from cifar_cnn.app import compose_config
from cifar_cnn.core.keys import KEYS, flatten, lookup, markdown_table, run_name, splits_rows
from cifar_cnn.core.published import PUBLISHED
from helpers import REPO


@pytest.mark.parametrize("config_name", ["config", "evaluate", "predict"])
def test_every_key_of_the_composed_configs_has_an_entry(config_name):
    config = OmegaConf.to_container(compose_config([], config_name=config_name), resolve=False)
    unlisted = [key for key in flatten(config) if not lookup(key).key]
    assert not unlisted, f"add these keys to cifar_cnn/core/keys.py: {unlisted}"


def test_entries_are_unique_and_consistent():
    names = [(k.key, app) for k in KEYS for app in k.apps]
    assert len(names) == len(set(names))  # one entry per key and app
    for key in KEYS:
        assert not (key.splits_rows and not key.names_run), key  # a row is a named run
        assert key.changes_result or key.resume_may_differ or key.key == "data.root", key


def test_prefixes_cover_nested_keys_and_the_longest_entry_wins():
    assert lookup("model.filters").key == "model.filters"
    assert lookup("+model.note").key == ""  # not in the table: changes the result
    assert lookup("optimizer.amsgrad").key == "optimizer."
    assert lookup("logger.mlflow.tracking_uri").key == "logger."
    assert lookup("compute.allow_tf32").key == "compute.allow_tf32"  # not compute.*
    assert lookup("+optimizer.maximize").key == "optimizer."
    assert lookup("hydra/launcher").key == "hydra/"
    assert not splits_rows("seed") and splits_rows("experiment") and not splits_rows("logger")


def run_dir(overrides: list[str]) -> str:
    """hydra.run.dir as conf/hydra/default.yaml resolves it for these overrides."""
    config = compose_config(overrides, hydra_config=True)
    HydraConfig.instance().set_config(config)
    return str(config.hydra.run.dir)


def test_run_directories_are_named_from_the_table_and_never_nest():
    overrides = [
        "model.filters=large",
        "seed=3",
        "logger=mlflow",
        "logger.mlflow.tracking_uri=http://HOST:5000",
        "data.root=/some/where",
        "compute.threads=1",
        "progress_bar_refresh=0",
        "+model.note=a/b",
    ]
    path = Path(run_dir(overrides))
    assert path.parent == Path("outputs/runs")
    assert path.name.endswith("_+model.note=a_b,model.filters=large,seed=3")
    assert run_name(overrides) == "_+model.note=a_b,model.filters=large,seed=3"
    assert run_name(["data.root=x", "resume=false"]) == ""


def test_the_hydra_config_names_runs_and_sweep_jobs_through_the_table():
    hydra = yaml.safe_load((REPO / "conf/hydra/default.yaml").read_text())
    assert "${run_name:${hydra.overrides.task}}" in hydra["run"]["dir"]
    assert hydra["sweep"]["subdir"] == "${hydra.job.num}${run_name:${hydra.overrides.task}}"
    assert "override_dirname" not in str(hydra)  # no second list of keys that name runs


def test_the_docs_show_the_current_table():
    docs = (REPO / "docs/configuration.md").read_text()
    assert markdown_table() in docs, "rerun cifar_cnn.core.keys.markdown_table() into the docs"


def test_the_published_ablation_tree_is_the_experiment_configs_tree():
    for run in PUBLISHED:
        config = yaml.safe_load((REPO / "conf/experiment" / f"{run.name}.yaml").read_text())
        defaults = [d for d in (config or {}).get("defaults", []) if d != "_self_"]
        expected = [] if run.parent in (None, "default") else [run.parent]
        assert defaults == expected, f"{run.name}: published parent {run.parent}, YAML {defaults}"
