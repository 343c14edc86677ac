"""The study's parametrised CNN: three conv blocks, then fully connected layers."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cifar_cnn.core.cifar10 import IMAGE_SIZE, NUM_CLASSES
from cifar_cnn.core.errors import ConfigError

FILTER_PRESETS = {"small": [24, 48, 96], "large": [64, 128, 256]}
ACTIVATIONS = ("relu", "leaky_relu")


def resolve_filters(filters: str | Sequence[int]) -> list[int]:
    """Turn a preset name (`small`, `large`) or an explicit list into a list of widths."""
    if isinstance(filters, str):
        if filters not in FILTER_PRESETS:
            raise ConfigError(
                f"model.filters={filters!r} is not a preset: use one of "
                f"{', '.join(FILTER_PRESETS)} or a list such as [24, 48, 96]"
            )
        return list(FILTER_PRESETS[filters])
    return list(filters)


def feature_map_sizes(kernel_sizes: Sequence[int], image_size: int = IMAGE_SIZE) -> list[int]:
    """Side length after each conv+pool block; raises ConfigError when a map vanishes."""
    sizes, side = [], image_size
    for i, kernel in enumerate(kernel_sizes, start=1):
        if kernel > side:
            raise ConfigError(
                f"model.kernel_sizes={list(kernel_sizes)}: conv{i} has kernel {kernel} but its "
                f"input is only {side}x{side}; use smaller kernels (the default is [5, 3, 3])"
            )
        side = side - kernel + 1
        if side < 2:
            raise ConfigError(
                f"model.kernel_sizes={list(kernel_sizes)}: conv{i} leaves a {side}x{side} map, "
                f"which MaxPool2d(2) after it reduces to nothing; use smaller kernels"
            )
        side //= 2
        sizes.append(side)
    return sizes


def _activation(name: str, leaky_slope: float) -> nn.Module:
    return nn.LeakyReLU(leaky_slope) if name == "leaky_relu" else nn.ReLU()


class CNN(nn.Sequential):
    """Conv blocks (conv, activation, BN, max-pool) then linear blocks (linear, act, BN, dropout).

    The default arguments reproduce the study's network exactly (256,058 parameters),
    including its missing activation after the last convolution. Layers are registered in
    the order they run, so the printed layer table is what runs. With `pool_before_relu`, a
    ReLU block runs conv, max-pool, ReLU: ReLU is monotone, so it commutes with max-pooling
    and the values and gradients equal the study's conv, ReLU, max-pool exactly, while the
    ReLU touches a quarter of the values (about 6% faster per step on the measured CPU,
    docs/STUDY.md). LeakyReLU blocks keep the study's order (rounding can tie two negative
    inputs and move a gradient), and so do blocks with batch norm between activation and pool.
    """

    def __init__(
        self,
        filters: str | Sequence[int] = "small",
        kernel_sizes: Sequence[int] = (5, 3, 3),
        activation: str = "relu",
        leaky_slope: float = 0.01,
        activation_after_last_conv: bool = False,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.0,
        batch_norm: bool = False,
        pool_before_relu: bool = True,
        in_channels: int = 3,
        num_classes: int = NUM_CLASSES,
    ):
        widths = resolve_filters(filters)
        side = feature_map_sizes(kernel_sizes)[-1]
        pool_first = pool_before_relu and activation == "relu" and not batch_norm
        layers: list[tuple[str, nn.Module]] = []
        channels = in_channels
        for i, (width, kernel) in enumerate(zip(widths, kernel_sizes, strict=True), start=1):
            block = [(f"conv{i}", nn.Conv2d(channels, width, kernel))]
            if i < len(widths) or activation_after_last_conv:
                block.append((f"act{i}", _activation(activation, leaky_slope)))
                if batch_norm:
                    block.append((f"bn{i}", nn.BatchNorm2d(width)))
            pool = (f"pool{i}", nn.MaxPool2d(2, 2))
            layers += [block[0], pool, *block[1:]] if pool_first else [*block, pool]
            channels = width
        layers.append(("flatten", nn.Flatten()))
        features = channels * side * side
        for j, width in enumerate(hidden, start=1):
            layers.append((f"fc{j}", nn.Linear(features, width)))
            layers.append((f"fc{j}_act", _activation(activation, leaky_slope)))
            if batch_norm:
                layers.append((f"fc{j}_bn", nn.BatchNorm1d(width)))
            if dropout > 0:
                layers.append((f"fc{j}_dropout", nn.Dropout(dropout)))
            features = width
        layers.append(("logits", nn.Linear(features, num_classes)))
        super().__init__(OrderedDict(layers))


def _describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Conv2d):
        return f"Conv2d({layer.in_channels}, {layer.out_channels}, {layer.kernel_size[0]})"
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features}, {layer.out_features})"
    if isinstance(layer, nn.MaxPool2d):
        return f"MaxPool2d({layer.kernel_size}, {layer.stride})"
    if isinstance(layer, nn.Dropout):
        return f"Dropout({layer.p})"
    return type(layer).__name__


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_summary(model: nn.Sequential, image_size: int = IMAGE_SIZE) -> str:
    """A table of every layer in the order it runs, its output shape and parameter count."""
    rows = [("layer", "output shape (C x H x W)", "params")]
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            shape = " x ".join(str(d) for d in x.shape[1:])
            rows.append((f"{name}: {_describe(layer)}", shape, f"{count_parameters(layer):,}"))
    model.train(was_training)
    rows.append(("total trainable", "", f"{count_parameters(model):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows)
