"""The confusion-matrix figure, logged to TensorBoard after testing and drawn in the report.

Matplotlib's object-oriented API (no pyplot): importing this sets no backend.
"""

from collections.abc import Sequence

from matplotlib.figure import Figure


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str],
    title: str = "Confusion matrix (test set)",
) -> Figure:
    """Counts per (true class, predicted class), each row also shown as recall in the cell."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        total = max(sum(row), 1)
        for j, count in enumerate(row):
            share = count / total
            colour = "white" if share > 0.5 else "black"
            ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="images")
    return fig
