"""CIFAR-10's constants: its classes, image size and split sizes. Free of torch."""

# The classes in label order (0 = airplane, ..., 9 = truck).
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 32  # images are 32x32 RGB: the network's input size
TRAIN_SIZE = 50_000
TEST_SIZE = 10_000
