"""Training: the data module, the network, the LightningModule, checkpoints, the Trainer and
one run from a composed config to its record (`cifar_cnn.training.run`)."""
