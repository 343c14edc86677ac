"""cifar_cnn's Hydra plugin: the resumable Optuna sweeper of `hparams_search=optuna`.

Hydra only loads plugin classes from the `hydra_plugins` namespace package, so the sweeper
lives here rather than in `cifar_cnn` (see resumable_optuna_sweeper.py).
"""
