import pytest
import torch

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.training.model import CNN, count_parameters, feature_map_sizes, layer_summary

# docs/STUDY.md's table, Figure 1's order: (layer, output shape without batch, params)
PUBLISHED = [
    ("conv1", (24, 28, 28), 1824),
    ("act1", (24, 28, 28), 0),
    ("pool1", (24, 14, 14), 0),
    ("conv2", (48, 12, 12), 10416),
    ("act2", (48, 12, 12), 0),
    ("pool2", (48, 6, 6), 0),
    ("conv3", (96, 4, 4), 41568),
    ("pool3", (96, 2, 2), 0),
    ("flatten", (384,), 0),
    ("fc1", (512,), 197120),
    ("fc1_act", (512,), 0),
    ("logits", (10,), 5130),
]


def test_default_network_in_the_study_order_matches_the_published_table():
    model = CNN(pool_before_relu=False)
    assert count_parameters(model) == 256_058
    x = torch.zeros(2, 3, 32, 32)
    rows = []
    for name, layer in model.named_children():
        x = layer(x)
        rows.append((name, tuple(x.shape[1:]), count_parameters(layer)))
    assert rows == PUBLISHED


def test_summary_lists_every_layer_and_the_total():
    summary = layer_summary(CNN())
    assert "96 x 2 x 2" in summary and "197,120" in summary and "256,058" in summary


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        ({"filters": "large"}, 905_226 - 128 - 256 - 1024),  # the batchnorm run minus its BN
        ({"hidden": [512, 128]}, 256_058 - 5130 + 65_664 + 1290),
    ],
)
def test_variants_change_parameters_as_expected(kwargs, params):
    assert count_parameters(CNN(**kwargs)) == params


def test_options_add_the_layers_they_name():
    model = CNN(
        "large",
        activation="leaky_relu",
        dropout=0.3,
        batch_norm=True,
        activation_after_last_conv=True,
    )
    names = dict(model.named_children())
    assert isinstance(names["act3"], torch.nn.LeakyReLU)
    assert isinstance(names["bn3"], torch.nn.BatchNorm2d)
    assert isinstance(names["fc1_bn"], torch.nn.BatchNorm1d)
    assert names["fc1_dropout"].p == 0.3
    assert model(torch.zeros(4, 3, 32, 32)).shape == (4, 10)


def test_flatten_size_follows_the_kernels():
    model = CNN("large", kernel_sizes=[7, 5, 3])
    assert feature_map_sizes([7, 5, 3]) == [13, 4, 1]
    assert model.fc1.in_features == 256
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    ("kernels", "message"),
    [
        ([7, 7, 7], r"conv3 has kernel 7 but its input is only 3x3"),
        ([5, 5, 5], r"conv3 leaves a 1x1 map, which MaxPool2d\(2\) after it reduces to nothing"),
    ],
)
def test_a_vanishing_feature_map_names_the_layer_and_sizes(kernels, message):
    with pytest.raises(ConfigError, match=message):
        CNN(kernel_sizes=kernels)


@pytest.mark.parametrize(
    ("kwargs", "swapped"),
    [({}, True), ({"activation": "leaky_relu"}, False), ({"batch_norm": True}, False)],
)
def test_pooling_before_relu_gives_the_study_orders_values_and_gradients(kwargs, swapped):
    nets = {}
    for pool_first in (True, False):
        torch.manual_seed(0)
        nets[pool_first] = CNN(**kwargs, pool_before_relu=pool_first)
    order = {pool_first: list(net._modules) for pool_first, net in nets.items()}
    assert (order[True] != order[False]) == swapped
    assert sorted(order[True]) == sorted(order[False])
    if swapped:  # registered, summarised and run in the same order
        assert order[True][:3] == ["conv1", "pool1", "act1"]
        assert layer_summary(nets[True]).splitlines()[2].startswith("pool1: MaxPool2d")
    images = torch.randn(16, 3, 32, 32)
    results = {}
    for pool_first, net in nets.items():
        logits = net(images)
        logits.square().sum().backward()
        results[pool_first] = [logits.detach(), *(p.grad for p in net.parameters())]
    for fast, study in zip(results[True], results[False], strict=True):
        assert torch.equal(fast, study)
