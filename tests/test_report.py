"""The study report (cifar_cnn.report) on a tiny synthetic sweep: 2 experiments x 2 seeds."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from cifar_cnn.analysis.plots import FIGURES
from cifar_cnn.analysis.rows import group_runs
from cifar_cnn.analysis.runs import ReportError, Run, overrides_from_dirname
from cifar_cnn.analysis.stats import holm
from cifar_cnn.analysis.tables import verdict_section
from cifar_cnn.core.published import BY_NAME, PUBLISHED, STUDY_ORDER
from cifar_cnn.core.record import RunRecord, read_record
from cifar_cnn.report import main, write_sweep_report
from helpers import FAST, REPO, fake_record, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sweep from the training app: experiments default and filters, seeds 0 and 1."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "2026-01-01_00-00-00"
    run_cli([
        "-m", "experiment=default,filters", "seed=0,1", *FAST,
        "data.synthetic_train_size=256", "data.synthetic_test_size=100",
        f"hydra.sweep.dir={sweep_dir}",
    ])  # fmt: skip
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 4
    return sweep_dir


@pytest.fixture(scope="module")
def report(sweep: Path) -> Path:
    return write_sweep_report([sweep])


def copy_sweep(sweep: Path, tmp_path: Path) -> Path:
    copy = tmp_path / sweep.name
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    return copy


def read_csv(report_dir: Path) -> list[dict[str, str]]:
    with (report_dir / "results.csv").open() as f:
        return list(csv.DictReader(f))


def metrics_by_experiment(sweep: Path) -> dict[str, list[RunRecord]]:
    found: dict[str, list[RunRecord]] = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        record = read_record(path, RunRecord)
        found.setdefault(record.experiment, []).append(record)
    return found


def section(markdown: str, title: str) -> str:
    """The text of one `## title` section of results.md."""
    return markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


# --- the report of a complete sweep -----------------------------------------------------------


@pytest.mark.slow
def test_writes_tables_and_every_figure(report: Path, sweep: Path) -> None:
    assert report == sweep / "report"
    for name in ("results.md", "results.csv", *FIGURES):
        assert (report / name).is_file(), name
    for name in FIGURES:
        assert (report / name).read_bytes().startswith(PNG_SIGNATURE)
        assert (report / name).stat().st_size > 10_000, f"{name} looks empty"
    markdown = (report / "results.md").read_text()
    for name in FIGURES:
        assert f"]({name})" in markdown
    assert "None: every run finished." in markdown


@pytest.mark.slow
def test_means_and_sds_equal_hand_computed(report: Path, sweep: Path) -> None:
    rows = {row["experiment"]: row for row in read_csv(report)}
    markdown = (report / "results.md").read_text()
    for experiment, runs in metrics_by_experiment(sweep).items():
        recalls = [m.test.recall for m in runs]
        n = len(recalls)
        mean = sum(recalls) / n
        sd = math.sqrt(sum((r - mean) ** 2 for r in recalls) / (n - 1))
        half = 12.7062047362 * sd / math.sqrt(n)  # t(0.975, 1): two seeds
        row = rows[experiment]
        assert int(row["runs_finished"]) == n == 2
        assert float(row["mean_recall"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["sd_recall"]) == pytest.approx(sd, abs=1e-12)
        assert float(row["ci95_low"]) == pytest.approx(max(0.0, mean - half), abs=1e-12)
        assert float(row["ci95_high"]) == pytest.approx(min(1.0, mean + half), abs=1e-12)
        published = BY_NAME[experiment].recall
        assert float(row["published_recall"]) == published
        assert float(row["diff_vs_published"]) == pytest.approx(mean - published, abs=1e-12)
        assert int(row["params"]) == runs[0].params
        assert row["epochs"] == "2"
        assert f"| {mean:.4f} | {sd:.4f} |" in markdown


@pytest.mark.slow
def test_rows_in_study_order_with_verdict_and_best(report: Path) -> None:
    rows = read_csv(report)
    assert [row["experiment"] for row in rows] == ["default", "filters"]
    assert [row["row"] for row in rows] == ["1", "2"]
    default, filters = rows
    assert default["verdict"] == ""  # row 1 has no parent
    assert filters["parent"] == "default"
    assert filters["verdict"] in {"holds", "reversed", "within noise"}
    assert "noise_threshold" not in filters and 0 <= float(filters["p_holm"]) <= 1
    assert float(filters["diff_ci95_low"]) <= float(filters["diff_vs_parent"])
    diff = float(filters["mean_recall"]) - float(default["mean_recall"])
    assert float(filters["diff_vs_parent"]) == pytest.approx(diff, abs=1e-12)
    assert float(filters["published_diff_vs_parent"]) == pytest.approx(0.7146 - 0.6932)
    best = max(rows, key=lambda row: float(row["mean_recall"]))
    assert [row["best"] for row in rows] == ["yes" if row is best else "" for row in rows]
    markdown = (report / "results.md").read_text()
    assert "Does each step of the ablation hold up?" in markdown
    assert "★ best" in markdown
    assert "differ from the published setup" in markdown  # 2 epochs on synthetic data


@pytest.mark.slow
def test_combined_sweeps_pool_seeds(sweep: Path, tmp_path: Path, capsys) -> None:
    again = copy_sweep(sweep, tmp_path / "again")  # the same seeds once more
    main([str(sweep), str(again), "--out", str(tmp_path / "combined")])
    assert str(tmp_path / "combined" / "results.md") in capsys.readouterr().out
    rows = read_csv(tmp_path / "combined")
    assert [(row["experiment"], row["runs_finished"]) for row in rows] == [
        ("default", "4"),
        ("filters", "4"),
    ]
    markdown = (tmp_path / "combined" / "results.md").read_text()
    assert "finished runs with the same seed ([0, 1])" in markdown
    assert f"`{sweep.name}/0`" in markdown  # runs named by sweep and job


# --- failed, unfinished and mixed runs ----------------------------------------------------------


@pytest.mark.slow
def test_runs_without_metrics_are_listed_not_dropped(sweep: Path, tmp_path: Path) -> None:
    copy = copy_sweep(sweep, tmp_path)
    # killed mid-training: a real run directory that lost its metrics.json (checkpoint kept)
    killed = next(copy.glob("*experiment=filters*seed=1*"))
    (killed / "metrics.json").unlink()
    # a job that raised: failed.json as train.py writes it, overrides as its sweep gave them
    default = json.loads(next(copy.glob("*experiment=default*seed=0*/metrics.json")).read_text())
    overrides = [o.replace("seed=0", "seed=2") for o in default["overrides"]]
    failed = copy / ("4_" + ",".join(sorted(overrides)))
    failed.mkdir()
    failure = {
        "error": "TrainingDiverged: training loss became nan in epoch 1",
        "epoch": 1,
        "overrides": overrides,
        "experiment": "default",
    }
    (failed / "failed.json").write_text(json.dumps(failure))
    # a bare directory: the job started and wrote nothing yet
    bare = copy / ("5_" + killed.name.partition("_")[2].replace("seed=1", "seed=3"))
    bare.mkdir()

    report = write_sweep_report([copy])
    rows = {row["experiment"]: row for row in read_csv(report)}
    assert (rows["default"]["runs_finished"], rows["default"]["runs_total"]) == ("2", "3")
    assert rows["default"]["runs_failed"] == "1"
    assert (rows["filters"]["runs_finished"], rows["filters"]["runs_total"]) == ("1", "3")
    assert rows["filters"]["runs_unfinished"] == "2"
    # the mean counts finished runs only
    kept = [m.test.recall for m in metrics_by_experiment(copy)["filters"]]
    assert float(rows["filters"]["mean_recall"]) == pytest.approx(kept[0], abs=1e-12)
    assert rows["filters"]["sd_recall"] == ""

    markdown = (report / "results.md").read_text()
    lost = section(markdown, "Failed, interrupted and unfinished runs")
    assert f"`{killed.name}`" in lost
    assert "checkpoints/last.ckpt exists" in lost
    assert "2 epoch(s) logged" in lost  # read from the run's TensorBoard events
    assert f"`{failed.name}`" in lost and "TrainingDiverged" in lost
    assert f"`{bare.name}`" in lost
    assert lost.count("**failed**") == 1 and lost.count("**unfinished**") == 2
    assert "2 of 3, 1 failed" in markdown and "1 of 3, 2 unfinished" in markdown
    assert "none (one seed)" in markdown  # filters kept one seed: no interval
    assert "cannot judge: one seed" in markdown


@pytest.mark.slow
def test_mixed_epochs_and_data_are_reported(sweep: Path, tmp_path: Path) -> None:
    copy = copy_sweep(sweep, tmp_path)
    path = next(copy.glob("*experiment=default*seed=1*")) / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["history"]["train_loss"].append(2.2)  # 3 epochs
    metrics["data"]["source"] = "folder"
    path.write_text(json.dumps(metrics))
    markdown = (write_sweep_report([copy]) / "results.md").read_text()
    assert "This sweep mixes epoch counts: 2 epochs (3 runs), 3 epochs (1 run)" in markdown
    assert "This sweep mixes data sources" in markdown
    assert "| 2 / 3 |" in markdown  # the default row's epochs


@pytest.mark.slow
def test_a_folder_of_single_runs_leaves_out_other_folders(sweep: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"  # like outputs/runs/: no multirun.yaml
    for run_dir in sorted(sweep.glob("*seed=0*")):
        shutil.copytree(run_dir, runs / run_dir.name)
    (runs / "notes").mkdir()
    markdown = (write_sweep_report([runs]) / "results.md").read_text()
    assert "1 subdirectories without run files were left out: notes." in markdown
    assert "`notes`" not in section(markdown, "Failed, interrupted and unfinished runs")
    assert [row["runs_total"] for row in read_csv(runs / "report")] == ["1", "1"]


# --- errors -------------------------------------------------------------------------------------


def test_missing_or_empty_sweep_gives_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(ReportError, match="no such directory"):
        write_sweep_report([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="holds no runs"):
        write_sweep_report([tmp_path / "empty"])
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert "error:" in str(exit_info.value.code)
    assert "no such directory" in str(exit_info.value.code)


@pytest.mark.slow
def test_default_is_the_newest_sweep(sweep: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="outputs/multiruns does not exist"):
        main([])
    root = tmp_path / "outputs" / "multiruns"
    (root / "2025-01-01_00-00-00").mkdir(parents=True)  # older, and empty
    shutil.copytree(sweep, root / sweep.name, ignore=shutil.ignore_patterns("report"))
    main([])
    assert (root / sweep.name / "report" / "results.md").is_file()
    assert "results.md" in capsys.readouterr().out


# --- pieces -------------------------------------------------------------------------------------


def make_run(experiment: str | None, seed: int, recall: float, **overrides: str) -> Run:
    items = {"seed": str(seed), **overrides}
    if experiment:
        items["experiment"] = experiment
    record = fake_record(recall, epochs=2, seed=seed, experiment=experiment)
    return Run(Path(f"{seed}"), f"{seed}", "finished", experiment, items, seed, record)


def steps(parent: list[float], **children: list[float]) -> list:
    """The rows of `default` (the parent) and its children in the study, judged together."""
    runs = [make_run("default", s, r) for s, r in enumerate(parent)]
    runs += [make_run(c, s, r) for c, recalls in children.items() for s, r in enumerate(recalls)]
    return group_runs(runs)


def verdict(parent: list[float], child: list[float]) -> str:
    return steps(parent, filters=child)[1].verdict.verdict


def test_verdicts() -> None:
    assert verdict([0.50, 0.51, 0.49], [0.60, 0.61, 0.59]) == "holds"
    assert verdict([0.60, 0.61, 0.59], [0.50, 0.51, 0.49]) == "reversed"
    assert verdict([0.50, 0.60, 0.40], [0.52, 0.62, 0.42]) == "within noise"
    assert verdict([0.5], [0.6]) == "cannot judge: one seed (same direction)"


def test_steps_judged_together_are_adjusted_by_holm() -> None:
    parent, child = [0.50, 0.51, 0.49], [0.525, 0.535, 0.515]  # Welch p = 0.038 alone
    assert verdict(parent, child) == "holds"
    rows = steps(parent, filters=child, extra_fc=child, kernels=[0.6])
    tested = [row.verdict for row in rows if row.verdict and row.verdict.test]
    assert [v.verdict for v in tested] == ["within noise", "within noise"]
    assert [v.p_holm for v in tested] == holm([v.test.p_value for v in tested])
    assert tested[0].p_holm == pytest.approx(2 * tested[0].test.p_value)
    assert tested[0].seeds_to_resolve > 3  # more seeds than this rerun has
    assert rows[-1].verdict.verdict == "cannot judge: one seed (opposite direction)"


def test_verdict_section_shows_p_values_intervals_and_seeds_to_resolve() -> None:
    rows = steps([0.50, 0.51, 0.49], filters=[0.525, 0.535, 0.515], extra_fc=[0.48, 0.53, 0.51])
    text = "\n".join(verdict_section(rows))
    assert "Welch" in text and "Holm" in text and "The 2 step(s)" in text
    filters = next(line for line in text.splitlines() if line.startswith("| filters"))
    test = rows[1].verdict.test
    assert f"[{test.low:+.4f}, {test.high:+.4f}] | {test.p_value:.4f} |" in filters
    assert f"| **within noise** | {rows[1].verdict.seeds_to_resolve} |" in filters


def test_plain_override_sweeps_group_by_overrides_without_seed() -> None:
    runs = [
        make_run(None, seed, recall, **{"model.filters": size, "trainer.max_epochs": "2"})
        for seed, (size, recall) in enumerate(
            [("small", 0.3), ("large", 0.5), ("small", 0.35), ("large", 0.55)]
        )
    ]
    rows = group_runs(runs)
    assert [row.label for row in rows] == ["model.filters=small", "model.filters=large"]
    assert [row.summary.n for row in rows] == [2, 2]
    assert rows[1].best and rows[1].published is None and rows[1].verdict is None


def test_dirname_overrides_keep_list_values() -> None:
    name = "3_experiment=kernels,model.kernel_sizes=[7,5,3],seed=1"
    assert overrides_from_dirname(name) == [
        "experiment=kernels",
        "model.kernel_sizes=[7,5,3]",
        "seed=1",
    ]
    assert overrides_from_dirname("0") == []


def test_published_table_is_consistent() -> None:
    assert [run.row for run in PUBLISHED] == list(range(1, 11))
    # every published row is a top-level experiment file; a file without a number is a row too
    experiments = {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    assert set(STUDY_ORDER) <= experiments
    for run in PUBLISHED:
        assert run.parent is None or BY_NAME[run.parent].row < run.row


def test_identical_rows_without_spread_need_no_seeds_count_but_say_none() -> None:
    # Both rows hold 0.5 on every seed: Δ 0 with zero spread. The t-test sizing would say 2
    # seeds (any difference beats zero noise); no number of seeds resolves a difference of 0.
    rows = steps([0.5, 0.5], filters=[0.5, 0.5])
    step = rows[1].verdict
    assert step.verdict == "within noise" and step.diff == 0 and step.seeds_to_resolve is None
    filters = next(line for line in verdict_section(rows) if line.startswith("| filters"))
    assert filters.endswith("| **within noise** | none (identical rows) |")
    assert "no number of seeds resolves a difference of zero" in "\n".join(verdict_section(rows))
