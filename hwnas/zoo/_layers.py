"""Small building blocks shared by the zoo models.

Only standard ``torch.nn`` layers are used so that the models trace cleanly with
``torch.fx`` and export to ONNX with the TorchScript exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

__all__ = [
    "ActFactory",
    "ConvNormAct",
    "InvertedResidual",
    "SqueezeExcite",
    "flush_denormals_",
    "init_cnn_weights_",
    "make_divisible",
    "relu",
]

ActFactory = Callable[[], nn.Module]

#: ``nn.ReLU(inplace=True)`` as a factory, the activation most CNNs here use.
relu: ActFactory = partial(nn.ReLU, inplace=True)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without losing more than 10%.

    This is the channel-rounding rule of the MobileNet papers (Sandler et al. 2018,
    "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

    Args:
        value: The unrounded channel count.
        divisor: The multiple to round to.
        min_value: Lower bound of the result; defaults to ``divisor``.

    Returns:
        The rounded channel count.

    Example:
        >>> make_divisible(72 / 4)
        24
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (no bias) -> ``BatchNorm2d`` -> optional activation.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size; padding keeps the "same" size for odd kernels.
        stride: Convolution stride.
        groups: Convolution groups (``groups == in_channels`` for depthwise).
        act: Factory for the activation module, or ``None`` for a linear output.
        bn_eps: ``BatchNorm2d`` epsilon.
        bn_momentum: ``BatchNorm2d`` momentum.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: ActFactory | None = relu,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation channel gate (Hu et al. 2018, "Squeeze-and-Excitation Networks").

    Global average pool -> 1x1 conv (reduce) -> activation -> 1x1 conv (expand) -> gate,
    and the input is scaled channel-wise by the gate.

    Args:
        channels: Channels of the input and output.
        squeeze_channels: Channels of the bottleneck.
        act: Factory for the activation between the two 1x1 convs.
        gate: Factory for the gate (``nn.Sigmoid`` or ``nn.Hardsigmoid``).
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        act: ActFactory = relu,
        gate: ActFactory = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * scale


class InvertedResidual(nn.Module):
    """Inverted residual (MBConv) block of MobileNetV2/V3 and EfficientNet.

    1x1 expand (skipped when ``expanded_channels == in_channels``) -> kxk depthwise ->
    optional squeeze-and-excitation -> linear 1x1 project, with an identity shortcut
    when the stride is 1 and the channel count is unchanged (Sandler et al. 2018,
    "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

    Args:
        in_channels: Input channels.
        expanded_channels: Channels of the depthwise conv.
        out_channels: Output channels.
        kernel_size: Depthwise kernel size.
        stride: Depthwise stride.
        act: Factory for the activation after expand and depthwise convs.
        se_channels: Bottleneck channels of the SE gate, or ``None`` for no SE.
        se_act: Factory for the activation inside the SE gate.
        se_gate: Factory for the SE gate non-linearity.
        bn_eps: ``BatchNorm2d`` epsilon.
        bn_momentum: ``BatchNorm2d`` momentum.
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: ActFactory = relu,
        se_channels: int | None = None,
        se_act: ActFactory = relu,
        se_gate: ActFactory = nn.Sigmoid,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(ConvNormAct(in_channels, expanded_channels, 1, act=act, **norm))
        layers.append(
            ConvNormAct(
                expanded_channels,
                expanded_channels,
                kernel_size,
                stride=stride,
                groups=expanded_channels,
                act=act,
                **norm,
            )
        )
        if se_channels is not None:
            layers.append(SqueezeExcite(expanded_channels, se_channels, act=se_act, gate=se_gate))
        layers.append(ConvNormAct(expanded_channels, out_channels, 1, act=None, **norm))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = out + x
        return out


@torch.no_grad()
def flush_denormals_(module: nn.Module) -> nn.Module:
    """Set every subnormal floating-point parameter entry to exactly zero, in place.

    Subnormal weights slow down CPU kernels by orders of magnitude and would make
    latency measurements of freshly initialised models meaningless.

    Args:
        module: Any module.

    Returns:
        ``module``, for chaining.
    """
    for param in module.parameters():
        if param.is_floating_point() and param.device.type != "meta":
            param.masked_fill_(param.abs() < torch.finfo(param.dtype).tiny, 0.0)
    return module


@torch.no_grad()
def init_cnn_weights_(module: nn.Module, linear_std: float = 0.01) -> nn.Module:
    """Initialise a CNN the usual way, in place, then flush subnormals.

    Convolutions get Kaiming-normal weights (fan-in, ReLU gain; He et al. 2015, "Delving
    Deep into Rectifiers") and zero bias, which keeps activations at unit scale through
    conv-ReLU stacks when BatchNorm is still the identity (fresh running statistics, eval
    mode), so untrained models give finite, non-subnormal outputs; batch/layer norms get unit weight and zero bias; linear layers get
    ``N(0, linear_std)`` weights and zero bias.

    Args:
        module: The model to initialise.
        linear_std: Standard deviation of the linear-layer weights.

    Returns:
        ``module``, for chaining.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return flush_denormals_(module)
