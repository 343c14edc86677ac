"""The prediction app: `python -m cifar_cnn.predict ckpt_path=FILE images=PATH [top_k=3]`.

PATH is an image file, a folder (searched recursively) or a list of them. Prints a table and
writes predictions.csv into its own run directory (outputs/predictions/...). The only place
that reads Hydra's state; `cifar_cnn.use.inference.predict` does the work.
"""

import hydra
from omegaconf import DictConfig

from cifar_cnn import app
from cifar_cnn.core.errors import UserError
from cifar_cnn.use.inference import predict


@hydra.main(version_base="1.3", config_path=app.CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    try:
        predict(cfg, app.run_directory())
    except UserError as e:
        app.exit_on_user_error(e)
        raise


if __name__ == "__main__":
    main()
