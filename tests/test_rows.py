"""Rows are experiment files: the catalog (core/experiments.py), rows without a published number
in the report (a section per folder, verdicts against the parent, the published best as a
reference), and a new row run through `make beyond` and the report."""

import csv
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib
import pytest
import yaml

from cifar_cnn.analysis.plots import FIGURES, figure_file, recall_bars
from cifar_cnn.analysis.rows import group_runs
from cifar_cnn.analysis.runs import collect_runs, config_dirs
from cifar_cnn.analysis.stats import holm
from cifar_cnn.core.experiments import (
    CONFIG_DIR,
    ExperimentError,
    read_catalog,
    section_of,
    section_title,
)
from cifar_cnn.core.published import BEST, BY_NAME, PUBLISHED
from cifar_cnn.core.record import AtBestVal, RunRecord, read_record, write_record
from cifar_cnn.report import write_sweep_report
from helpers import FAST, REPO, clean_env, fake_record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROW = """# @package _global_
# A throwaway row: dropout 0.5 instead of 0.3, on the study's best.
defaults:
  - /experiment/batchnorm
  - _self_
model:
  dropout: 0.5
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def experiment(parents: list, comment: str = "") -> str:
    return f"# @package _global_\n{comment}" + yaml.safe_dump({"defaults": [*parents, "_self_"]})


# --- the catalog ------------------------------------------------------------------------------


def test_the_catalog_holds_the_study_with_its_published_parents():
    catalog = read_catalog()
    assert {run.name for run in PUBLISHED} <= set(catalog)
    for run in PUBLISHED:
        assert catalog[run.name].parent == run.parent, run.name  # `default` when none is named
        assert catalog[run.name].section == ""
    assert catalog["batchnorm"].description.startswith("Row 7 of docs/STUDY.md (0.7487)")


def test_parents_resolve_as_in_hydra_within_nested_folders(tmp_path):
    conf = write(tmp_path / "conf", {
        "experiment/default.yaml": "{}\n",
        "experiment/base.yaml": experiment([], "# The base.\n# Two lines.\n"),
        "experiment/beyond/a.yaml": experiment(["/experiment/base"], "# Row a.\n"),
        "experiment/beyond/b.yaml": experiment(
            ["/experiment/beyond/a", {"override /optimizer": "adamw"}]
        ),
        "experiment/beyond/deep/c.yaml": experiment([{"/experiment/beyond": "b"}]),
        "experiment/beyond/deep/d.yaml": experiment(["/experiment/beyond/deep/c", "/model/cnn"]),
    })  # fmt: skip
    catalog = read_catalog([conf])
    parents = {name: e.parent for name, e in catalog.items()}
    assert parents == {
        "base": "default",
        "beyond/a": "base",
        "beyond/b": "beyond/a",
        "beyond/deep/c": "beyond/b",
        "beyond/deep/d": "beyond/deep/c",
        "default": None,
    }
    assert catalog["base"].description == "The base. Two lines."
    assert catalog["beyond/a"].description == "Row a."
    assert [section_of(n) for n in parents] == ["", "beyond", "beyond", *["beyond/deep"] * 2, ""]
    assert section_title("") == "the study" and section_title("beyond") == "Beyond the study"
    assert section_title("my_rows") == "My rows"


def test_an_earlier_config_dir_hides_a_later_one_and_bad_parents_are_named(tmp_path):
    first = write(tmp_path / "one", {"experiment/x.yaml": experiment([], "# first\n")})
    second = write(tmp_path / "two", {"experiment/x.yaml": "# second\n", "experiment/y.yaml": ""})
    catalog = read_catalog([first, second])
    assert catalog["x"].description == "first" and catalog["y"].parent is None  # no default
    write(first, {"experiment/beyond/z.yaml": experiment(["missing"])})
    with pytest.raises(ExperimentError, match=r"z.yaml: its parent 'missing'"):
        read_catalog([first])
    write(first, {"experiment/beyond/z.yaml": experiment(["/experiment/x", "/experiment/y"])})
    with pytest.raises(ExperimentError, match="z.yaml: its defaults name 2 experiments"):
        read_catalog([first, second])


def test_the_report_imports_neither_torch_nor_hydra():
    check = (
        "import cifar_cnn.report, sys; "
        "print(sorted({'torch', 'lightning', 'hydra'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


# --- rows without a published number in the report ----------------------------------------------


def fake_sweep(root: Path, conf: Path, rows: dict[str, list[float]]) -> Path:
    """A sweep directory as Hydra writes it, one fake finished run per recall, composed from
    `conf` (multirun.yaml's config sources)."""
    sweep = root / "sweep"
    sources = [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
               {"path": str(conf), "schema": "file", "provider": "main"}]  # fmt: skip
    write(
        sweep,
        {"multirun.yaml": yaml.safe_dump({"hydra": {"runtime": {"config_sources": sources}}})},
    )
    job = 0
    for name, recalls in rows.items():
        for seed, recall in enumerate(recalls):
            overrides = [f"experiment={name}", f"seed={seed}"]
            run_dir = sweep / f"{job}_{','.join(overrides).replace('/', '_')}"
            run_dir.mkdir()
            record = fake_record(recall, epochs=3, seed=seed, experiment=name, overrides=overrides)
            write_record(run_dir / "metrics.json", record)
            job += 1
    return sweep


@pytest.fixture
def beyond_conf(tmp_path: Path) -> Path:
    """conf/ with three beyond rows: a on the study's best, b on a, c on high_lr."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    return write(conf, {
        "experiment/beyond/a.yaml": experiment(["/experiment/batchnorm"], "# Row a: flip.\n"),
        "experiment/beyond/b.yaml": experiment(["/experiment/beyond/a"], "# Row b: crop, on a.\n"),
        "experiment/beyond/c.yaml": experiment(["/experiment/high_lr"], "# Row c.\n"),
    })  # fmt: skip


@pytest.fixture
def mixed_rows() -> dict[str, list[float]]:
    return {
        "dropout": [0.70, 0.71, 0.69],
        "batchnorm": [0.74, 0.75, 0.73],
        "beyond/b": [0.805, 0.815, 0.795],
        "beyond/a": [0.80, 0.81, 0.79],
        "beyond/c": [0.60, 0.62],
    }


def read_csv(report: Path) -> dict[str, dict[str, str]]:
    with (report / "results.csv").open() as f:
        return {row["experiment"]: row for row in csv.DictReader(f)}


def test_rows_without_a_published_number_get_a_section_and_a_verdict(
    tmp_path, beyond_conf, mixed_rows
):
    report = write_sweep_report([fake_sweep(tmp_path, beyond_conf, mixed_rows)])
    rows = read_csv(report)
    assert list(rows) == ["dropout", "batchnorm", "beyond/a", "beyond/b", "beyond/c"]
    a, b, c = rows["beyond/a"], rows["beyond/b"], rows["beyond/c"]
    assert {r["section"] for r in (a, b, c)} == {"Beyond the study"}
    assert rows["batchnorm"]["section"] == "the study"
    assert [a["parent"], b["parent"]] == ["batchnorm", "beyond/a"]
    assert a["verdict"] == "better" and b["verdict"] == "within noise"
    assert c["verdict"] == "parent not in this sweep: high_lr"
    assert rows["batchnorm"]["verdict"] == "holds"  # the study's step, against its claim
    # Holm within the section: beyond's two tests together, the study's step on its own
    assert [float(a["p_holm"]), float(b["p_holm"])] == holm(
        [float(a["p_value"]), float(b["p_value"])]
    )
    assert rows["batchnorm"]["p_holm"] == rows["batchnorm"]["p_value"]
    for row in (a, b, c):
        assert row["published_recall"] == row["diff_vs_published"] == row["row"] == ""
        assert row["published_diff_vs_parent"] == row["seeds_to_resolve"] == ""
    assert [r["best"] for r in rows.values()] == ["", "yes", "", "yes", ""]  # one per section

    markdown = (report / "results.md").read_text()
    study, beyond = markdown.split("## Beyond the study")
    assert "## Results" in study and "beyond/a" not in study.split("## Every finished run")[0]
    assert "| **beyond/b** ★ best | Row b: crop, on a. | 3 of 3 |" in beyond
    assert f"| {0.81:.4f} | – | – |" not in beyond  # sanity: the means are the rows' own
    assert "| beyond/a | Row a: flip. | 3 of 3 | 0.8000 | 0.0100 |" in beyond
    line = next(
        t for t in beyond.splitlines() if t.startswith("| beyond/a | Row a: flip. | batchnorm")
    )
    assert "| – | +0.0600 |" in line and "**better**" in line  # published Δ: a dash
    assert f"the published best, #{BEST.row} {BEST.name}, {BEST.recall:.4f}" in beyond
    assert "**parent not in this sweep: high_lr**" in beyond
    assert "Steps compared: 3 (better: 1, within noise: 1, parent not in this sweep: 1)" in beyond
    assert "seeds as dots; the dashed line is the study's published best" in beyond
    for name in FIGURES:
        for section in ("", "beyond"):
            path = report / figure_file(name, section)
            assert path.read_bytes().startswith(PNG_SIGNATURE), path
        assert f"]({figure_file(name, 'beyond')})" in beyond
        assert f"]({name})" in study and figure_file(name, "beyond") not in study


def test_the_reference_line_is_the_published_best(beyond_conf, mixed_rows, tmp_path):
    assert BEST is BY_NAME["batchnorm"] and BEST.recall == 0.7487
    assert BEST.recall == max(run.recall for run in PUBLISHED)
    sweep = fake_sweep(tmp_path, beyond_conf, mixed_rows)
    rows = group_runs(collect_runs([sweep])[0], read_catalog(config_dirs([sweep])))
    beyond = [row for row in rows if row.section == "beyond"]
    colours = [matplotlib.colormaps["tab10"](i) for i in range(len(beyond))]
    ax = recall_bars(beyond, colours, BEST).axes[0]
    (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert list(line.get_ydata()) == [BEST.recall, BEST.recall]
    assert "0.7487" in line.get_label()
    assert not [line for line in recall_bars(beyond, colours).axes[0].get_lines()
                if line.get_linestyle() == "--"]  # fmt: skip


def test_the_report_reads_the_config_dirs_the_sweep_recorded(tmp_path, beyond_conf):
    sweep = fake_sweep(tmp_path, beyond_conf, {"beyond/a": [0.8]})
    assert config_dirs([sweep]) == [beyond_conf, CONFIG_DIR]
    shutil.rmtree(beyond_conf)  # gone: the row stays, its parent unknown
    assert config_dirs([sweep]) == [CONFIG_DIR]
    rows = read_csv(write_sweep_report([sweep]))
    assert rows["beyond/a"]["change"] == "(not an experiment file)"
    assert rows["beyond/a"]["section"] == "Beyond the study" and rows["beyond/a"]["verdict"] == ""


# --- a new row, end to end ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_new_row_runs_through_make_beyond_and_the_report(tmp_path):
    """A copy of conf/ with a throwaway row (no published number) run by the exact command of
    `make beyond`: make itself, in a folder that holds the copy, the venv's python a stub."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    shutil.rmtree(conf / "experiment/beyond")  # the shipped rows: only the throwaway one runs
    write(conf, {"experiment/beyond/zz_test.yaml": ROW})
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    python = write(tmp_path / ".venv/bin", {"python": f'#!/bin/sh\nexec {sys.executable} "$@"\n'})
    (python / "python").chmod(0o755)
    (python / ".installed").touch()
    sweep = tmp_path / "sweep"
    args = [*FAST, "data.synthetic_train_size=256", "data.synthetic_test_size=100",
            f"--config-path={conf}"]  # fmt: skip
    command = ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "beyond",
               "SEEDS=0,1", f"SWEEP_DIR={sweep}", f"ARGS={' '.join(args)}"]  # fmt: skip
    env = clean_env(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "experiment=beyond/zz_test seed=0,1" in result.stdout
    records = [read_record(p, RunRecord) for p in sorted(sweep.glob("*/metrics.json"))]
    assert [r.config["model"]["dropout"] for r in records] == [0.5, 0.5]  # the row's change

    rows = read_csv(sweep / "report")
    assert list(rows) == ["beyond/zz_test"]
    row = rows["beyond/zz_test"]
    assert row["runs_finished"] == "2" and row["published_recall"] == ""
    assert row["change"] == "A throwaway row: dropout 0.5 instead of 0.3, on the study's best."
    assert row["verdict"] == "parent not in this sweep: batchnorm"
    markdown = (sweep / "report" / "results.md").read_text()
    assert "\n## Beyond the study" in markdown and "\n## Results" not in markdown
    assert "| beyond/zz_test | A throwaway row" in markdown
    assert "**parent not in this sweep: batchnorm**" in markdown
    for name in FIGURES:
        assert (sweep / "report" / figure_file(name, "beyond")).is_file()
        assert not (sweep / "report" / name).exists()  # no study rows, no study figures


def test_a_top_level_row_without_a_number_joins_the_study(tmp_path, mixed_rows):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    write(conf, {"experiment/wider.yaml": experiment(["batchnorm"], "# Wider, on row 7.\n")})
    rows = {**mixed_rows, "wider": [0.70, 0.71, 0.72]}
    report = write_sweep_report([fake_sweep(tmp_path, conf, rows)])
    wider = read_csv(report)["wider"]
    assert (wider["section"], wider["row"], wider["published_recall"]) == ("the study", "", "")
    assert (wider["parent"], wider["verdict"]) == ("batchnorm", "worse")
    study = (report / "results.md").read_text().split("## Beyond the study")[0]
    assert "|  | wider | Wider, on row 7. | 3 of 3 |" in study
    assert "| wider | Wider, on row 7. | batchnorm | – |" in study and "**worse**" in study


def test_the_test_recall_at_the_best_validation_epoch_is_shown_and_said_to_be(tmp_path):
    """With a validation split the report shows the last epoch's test recall and, beside it,
    that of the best-validation checkpoint, saying which is which."""
    sweep = tmp_path / "sweep"
    for seed, (epoch, recall) in enumerate([(2, 0.61), (3, 0.63)]):
        run_dir = sweep / f"{seed}_experiment=batchnorm,seed={seed}"
        run_dir.mkdir(parents=True)
        last = fake_record(0.6, epochs=3, seed=seed, experiment="batchnorm", val_recall=0.5)
        best_test = replace(last.test, recall=recall)
        record = replace(last, at_best_val=AtBestVal(epoch, 0.55, best_test))
        write_record(run_dir / "metrics.json", record)
    report = write_sweep_report([sweep])
    row = read_csv(report)["batchnorm"]
    assert float(row["mean_recall"]) == pytest.approx(0.6)
    assert float(row["mean_recall_at_best_val"]) == pytest.approx(0.62)
    assert row["best_val_epochs"] == "2 3"
    markdown = (report / "results.md").read_text()
    assert "test recall at best validation (epoch)" in markdown
    assert "| 0.6200 (2 3) |" in markdown and "never on test" in markdown
