"""The evaluation app: `python -m cifar_cnn.evaluate ckpt_path=FILE [data.source=... ...]`.

Rebuilds the network from the checkpoint alone, tests it on the configured test data and
writes eval.json into its own run directory (outputs/evaluations/...). The only place that
reads Hydra's state; `cifar_cnn.use.inference.evaluate` does the work.
"""

import hydra
from omegaconf import DictConfig

from cifar_cnn import app
from cifar_cnn.core.errors import UserError
from cifar_cnn.use.inference import evaluate


@hydra.main(version_base="1.3", config_path=app.CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the test recall."""
    try:
        return evaluate(cfg, app.run_directory()).test.recall
    except UserError as e:
        app.exit_on_user_error(e)
        raise


if __name__ == "__main__":
    main()
