"""The built package ships its configs and its commands, so a non-editable install runs from
any directory."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

COMMANDS = {  # console command -> the module of its `python -m` form
    "cifar-cnn-train": "cifar_cnn.train",
    "cifar-cnn-evaluate": "cifar_cnn.evaluate",
    "cifar-cnn-predict": "cifar_cnn.predict",
    "cifar-cnn-report": "cifar_cnn.report",
    "cifar-cnn-search": "cifar_cnn.search",
    "cifar-cnn-status": "cifar_cnn.status",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy (building in place would leave build/ here)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    for name in ("cifar_cnn", "conf", "hydra_plugins"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (built,) = tmp_path.glob("cifar_cnn-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_ships_every_config_file(wheel):
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("cifar_cnn/conf/")}
    expected = {
        f"cifar_cnn/conf/{p.relative_to(REPO / 'conf')}" for p in REPO.glob("conf/**/*.yaml")
    }
    assert expected and shipped == expected
    plugin = "hydra_plugins/cifar_cnn_search/resumable_optuna_sweeper.py"  # hparams_search=optuna
    assert plugin in zipfile.ZipFile(wheel).namelist()


def test_each_console_command_is_the_app_of_its_python_m_form():
    text = (REPO / "pyproject.toml").read_text()
    for command, module in COMMANDS.items():
        assert f'{command} = "{module}:main"' in text


@pytest.mark.slow
def test_the_console_commands_run_from_a_non_editable_install(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / "bin"
    python = bin_dir / "python"
    # The dependencies come from this environment (read after the venv's own site-packages);
    # the project itself only from the wheel.
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "outer_environment.pth").write_text("\n".join(sorted(paths)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> str:
        result = subprocess.run(
            args, cwd=elsewhere, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": ""},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    location = run(str(python), "-c", "import cifar_cnn; print(cifar_cnn.__file__)")
    assert Path(location).is_relative_to(venv)
    train_help = run(str(bin_dir / "cifar-cnn-train"), "--help")
    assert "experiment: batchnorm, big_batch" in train_help and "max_epochs: 300" in train_help
    assert "SWEEP_DIR" in run(str(bin_dir / "cifar-cnn-report"), "--help")
    assert all((bin_dir / command).is_file() for command in COMMANDS)
    # The status expands a sweep's experiment=glob(*) from the configs inside the package.
    sweep = elsewhere / "sweep"
    sweep.mkdir()
    overrides = "hydra:\n  overrides:\n    task: ['experiment=glob(*)', seed=0]\n"
    (sweep / "multirun.yaml").write_text(overrides)
    assert "10 jobs (10 not started)" in run(str(bin_dir / "cifar-cnn-status"), str(sweep))
