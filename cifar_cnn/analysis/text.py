"""How the reports write numbers, durations, runs and markdown tables."""

from __future__ import annotations

from collections.abc import Sequence

from cifar_cnn.core.record import RunRecord


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


def joined(values: Sequence) -> str:
    """The values joined by " / "; an en dash when there are none."""
    return " / ".join(str(v) for v in values) if values else "–"


def data_text(record: RunRecord) -> str:
    """A finished run's data source and sizes: `synthetic (256 train / 100 test)`, or with a
    validation split `synthetic (206 train / 50 val / 100 test)`."""
    data = record.data
    sizes = [f"{data.train_size} train", f"{data.test_size} test"]
    if data.val_size:
        sizes.insert(1, f"{data.val_size} val")
    return f"{data.source} ({' / '.join(sizes)})"


def precision_text(record: RunRecord) -> str:
    """A finished run's numeric precision (`32-true`, `bf16-mixed`), with `+tf32` when TF32
    was allowed."""
    environment = record.environment
    return environment.precision + ("+tf32" if environment.tf32 else "")
