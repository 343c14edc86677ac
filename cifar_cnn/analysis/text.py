"""How the reports write numbers, durations and markdown tables."""

from collections.abc import Sequence


def fmt(value: float | None, signed: bool = False) -> str:
    """A number for the markdown tables (4 decimals); an en dash when there is none."""
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def fmt_duration(seconds: float | None) -> str:
    """`12.3 s`, `4 min 05 s`, `1 h 15 min 44 s`."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s"


def md_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table (and a blank line) of `header` and `lines`; `|` in a cell escaped."""

    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    return [cells(header), "|" + "---|" * len(header), *(cells(line) for line in lines), ""]
