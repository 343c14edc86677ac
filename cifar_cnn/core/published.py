"""The published results this project reproduces: the one place the study's numbers live.

Source: "Image Classification using CNNs", course project, KTH EQ2425 (2022), restated in
docs/STUDY.md ("The published runs"). Every row is one run with one seed, 300 epochs on the
full CIFAR-10 (50,000 training and 10,000 test images); the metric is the average (macro)
top-1 recall on the test set. The experiment names are those of conf/experiment/*.yaml;
an experiment file without a number here is a row of the report all the same
(core/experiments.py).
"""

from dataclasses import dataclass

SOURCE = (
    '"Image Classification using CNNs", KTH EQ2425 course project (2022); '
    "numbers as restated in docs/STUDY.md"
)
EPOCHS = 300


@dataclass(frozen=True)
class PublishedRun:
    """One row of the study's results table."""

    row: int  # the row number in docs/STUDY.md
    name: str  # the experiment name (conf/experiment/<name>.yaml)
    change: str  # what the row changes, relative to its parent row
    parent: str | None  # the experiment this row changes; None for the default
    recall: float  # published average top-1 recall on the 10,000 test images
    note: str = ""
    train_seconds: float | None = None  # published training time (300 epochs), where given


PUBLISHED: tuple[PublishedRun, ...] = (
    PublishedRun(1, "default", "default network: filters [24, 48, 96], kernels [5, 3, 3]",
                 None, 0.6932),
    PublishedRun(2, "filters", "filters [64, 128, 256]", "default", 0.7146),
    PublishedRun(3, "extra_fc", "extra Linear(512 -> 128) + ReLU", "default", 0.7018),
    PublishedRun(4, "kernels", "kernels [7, 5, 3]", "filters", 0.7003,
                 note="the study's text also says 0.7018"),
    PublishedRun(5, "leaky_relu", "every activation LeakyReLU", "filters", 0.7199),
    PublishedRun(6, "dropout", "Dropout(0.3) between the linear layers", "leaky_relu", 0.7358),
    PublishedRun(7, "batchnorm", "BatchNorm after each activation (the study's best)",
                 "dropout", 0.7487, train_seconds=1 * 3600 + 15 * 60 + 44),
    PublishedRun(8, "big_batch", "batch size 256", "batchnorm", 0.7236,
                 train_seconds=1 * 3600 + 9 * 60 + 24),
    PublishedRun(9, "high_lr", "learning rate 0.1", "batchnorm", 0.7391),
    PublishedRun(10, "shuffle", "shuffle the training data each epoch", "batchnorm", 0.7479),
)  # fmt: skip

BY_NAME: dict[str, PublishedRun] = {run.name: run for run in PUBLISHED}
STUDY_ORDER: tuple[str, ...] = tuple(run.name for run in PUBLISHED)
# The study's best row (row 7): the reference line of the rows that go beyond the study.
BEST: PublishedRun = max(PUBLISHED, key=lambda run: run.recall)
# The study's conclusion names dropout the largest gain (among the steps after row 2).
CLAIMED_LARGEST_GAIN = "dropout"
