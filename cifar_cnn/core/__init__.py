"""What every phase shares, free of torch, Lightning and Hydra: CIFAR-10's constants, the
published results, errors, the run-directory files and the run record."""
