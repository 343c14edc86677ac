"""Matplotlib figures shared by the TensorBoard logs and the report."""

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str],
    title: str = "Confusion matrix (test set)",
) -> Figure:
    """Counts per (true class, predicted class), each row also shown as recall in the cell."""
    fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    image = ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        total = max(sum(row), 1)
        for j, count in enumerate(row):
            share = count / total
            ax.text(
                j,
                i,
                f"{share:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="images")
    return fig
