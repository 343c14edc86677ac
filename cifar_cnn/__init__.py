"""cifar_cnn: a CIFAR-10 CNN ablation study with PyTorch Lightning and Hydra."""
