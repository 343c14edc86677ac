"""`python -m cifar_cnn` is `python -m cifar_cnn.train`."""

from cifar_cnn.train import main

main()
