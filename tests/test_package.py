"""The built package ships its configs, so a non-editable install runs from any directory."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from helpers import REPO


@pytest.mark.slow
def test_the_wheel_ships_every_config_file(tmp_path):
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the repo
    for name in ("cifar_cnn", "conf", "hydra_plugins"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("cifar_cnn-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("cifar_cnn/conf/")}
    expected = {
        f"cifar_cnn/conf/{p.relative_to(REPO / 'conf')}" for p in REPO.glob("conf/**/*.yaml")
    }
    assert expected and shipped == expected
    plugin = "hydra_plugins/cifar_cnn_search/resumable_optuna_sweeper.py"  # hparams_search=optuna
    assert plugin in zipfile.ZipFile(wheel).namelist()
