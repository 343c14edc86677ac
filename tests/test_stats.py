"""The report's statistics (cifar_cnn.analysis.stats) on cases with known answers."""

import math
from pathlib import Path

import pytest

from cifar_cnn.analysis.stats import (
    Summary,
    decide,
    fmt_p,
    holm,
    regularized_beta,
    seeds_to_resolve,
    t_quantile,
    t_sf,
    untestable,
    welch,
    welch_df,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_regularized_beta_closed_forms() -> None:
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert regularized_beta(x, 1.0, 1.0) == pytest.approx(x, abs=1e-12)
        assert regularized_beta(x, 3.5, 1.0) == pytest.approx(x**3.5, abs=1e-12)
    assert regularized_beta(0.5, 7.3, 7.3) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError):
        regularized_beta(1.5, 1.0, 1.0)


@pytest.mark.parametrize("t", [-30.0, -2.0, -0.3, 0.0, 0.7, 4.0, 250.0])
def test_t_tail_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(t: float) -> None:
    cauchy = 0.5 - math.atan(t) / math.pi  # df = 1
    df2 = 0.5 - t / (2 * math.sqrt(2 + t * t))
    assert t_sf(t, 1) == pytest.approx(cauchy, rel=1e-9, abs=1e-15)
    assert t_sf(t, 2) == pytest.approx(df2, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    ("df", "quantile"),
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423), (3.5, 2.9401), (1e6, 1.9600)],
)
def test_t_quantile_known_values(df: float, quantile: float) -> None:
    """t(0.975, df) from printed tables (and R's qt(0.975, 3.5) for a non-integer df)."""
    assert t_quantile(0.975, df) == pytest.approx(quantile, abs=6e-5)
    assert t_quantile(0.025, df) == pytest.approx(-quantile, abs=6e-5)


def test_t_quantile_inverts_the_tail_far_out_and_between_the_table_rows() -> None:
    for df in (0.7, 3.5, 12.25):
        for p in (1e-10, 0.2, 0.5, 0.9, 0.999999):
            assert t_sf(t_quantile(p, df), df) == pytest.approx(1 - p, rel=1e-9)
    assert t_quantile(0.975, 3) > t_quantile(0.975, 3.5) > t_quantile(0.975, 4)
    assert t_quantile(0.5, 9) == 0.0
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_summary_interval_uses_the_exact_quantile() -> None:
    summary = Summary.of([0.5, 0.7])
    assert summary.mean == pytest.approx(0.6) and summary.sd == pytest.approx(math.sqrt(0.02))
    assert summary.half_width == pytest.approx(12.7062 * 0.1, abs=1e-4)
    assert Summary.of([0.5]).sd is None and Summary.of([0.5]).interval is None
    assert Summary.of([]).n == 0


def test_welch_on_a_textbook_example() -> None:
    """The first example of Wikipedia's "Welch's t-test": t = -2.46, df = 25.0, p = 0.021."""
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    test = welch(Summary.of(a), Summary.of(b))
    assert test.diff / test.standard_error == pytest.approx(-2.46, abs=0.005)
    assert test.df == pytest.approx(25.0, abs=0.05)
    assert test.p_value == pytest.approx(0.021, abs=0.0005)
    assert test.low < test.diff < test.high < 0  # the interval excludes 0 as p < 0.05


def test_welch_degrees_of_freedom() -> None:
    assert welch_df(1.0, 4, 1.0, 4) == pytest.approx(6.0)  # equal spreads and sizes: n1+n2-2
    assert welch_df(0.0, 3, 2.0, 5) == pytest.approx(4.0)  # one side without spread: n-1
    assert welch_df(math.sqrt(3), 3, math.sqrt(5), 5) == pytest.approx(4 / 0.75)  # not whole
    assert welch_df(0.0, 3, 0.0, 3) == 4.0


def test_welch_interval_and_p_value_on_three_seeds_a_side() -> None:
    test = welch(Summary.of([0.60, 0.62, 0.64]), Summary.of([0.50, 0.52, 0.54]))
    se = 0.02 * math.sqrt(2 / 3)
    assert test.df == pytest.approx(4.0) and test.standard_error == pytest.approx(se)
    assert test.low == pytest.approx(0.1 - 2.7764 * se, abs=1e-4)
    assert test.high == pytest.approx(0.1 + 2.7764 * se, abs=1e-4)
    # t = 6.12 lies between t(0.995, 4) = 4.604 and t(0.999, 4) = 7.173
    assert 0.002 < test.p_value < 0.01
    same = welch(Summary.of([0.5, 0.5]), Summary.of([0.5, 0.5]))
    assert same.p_value == 1.0
    with pytest.raises(ValueError, match="two or more values"):
        welch(Summary.of([0.5]), Summary.of([0.5, 0.6]))


def test_holm_steps_down_stays_monotone_and_caps_at_one() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2] and holm([]) == []
    adjusted = holm([0.001, 0.2, 0.013, 0.049, 0.3])
    assert all(a >= p for a, p in zip(adjusted, [0.001, 0.2, 0.013, 0.049, 0.3], strict=True))


def test_verdict_strings() -> None:
    assert decide(0.02, 0.01, claimed=0.03) == "holds"
    assert decide(-0.02, 0.01, claimed=0.03) == "reversed"
    assert decide(0.02, 0.2, claimed=0.03) == "within noise"
    one, three = Summary.of([0.6]), Summary.of([0.5, 0.51, 0.52])
    assert untestable(one, three, claimed=-1.0) == "cannot judge: one seed (opposite direction)"
    assert untestable(Summary.of([]), three, claimed=1.0) == "no finished runs to compare"
    assert untestable(three, three, claimed=1.0) is None
    assert fmt_p(0.01234) == "0.0123" and fmt_p(3e-7) == "< 0.0001" and fmt_p(None) == "–"


def test_seeds_to_resolve_known_cases_and_monotone_in_spread() -> None:
    # effect size 1 (0.5): 17 (64) per group at alpha 0.05 and power 0.8, as the exact
    # noncentral-t power gives; the normal formula alone gives 16 (63)
    assert seeds_to_resolve(1.0, 1.0) == 17
    assert seeds_to_resolve(-0.5, 1.0) == 64
    assert seeds_to_resolve(0.0214, 0.0) == 2
    counts = [seeds_to_resolve(0.0214, sd) for sd in (0.002, 0.005, 0.01, 0.02, 0.05)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert seeds_to_resolve(0.01, 0.01, power=0.9) > seeds_to_resolve(0.01, 0.01)
    with pytest.raises(ValueError):
        seeds_to_resolve(0.0, 0.01)


def test_the_worked_example_of_the_docs_prints_what_they_show(capsys) -> None:
    page = (DOCS / "statistics.md").read_text()
    program = page.split("```python\n", 1)[1].split("```", 1)[0]
    printed = page.split("```text\n", 1)[1].split("```", 1)[0]
    exec(compile(program, "docs/statistics.md", "exec"), {})
    assert capsys.readouterr().out == printed
