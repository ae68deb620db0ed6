"""The CIFAR ResNets of He et al. (2016, section 4.2), as used by the CB-loss and LDAM-DRW CIFAR experiments."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_num_classes
from .base import Classifier, linear_head

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56"]


class _PadShortcut(nn.Module):
    """Option-A shortcut: parameter-free; subsample spatially by ``stride`` and zero-pad the extra channels.

    Padding is split evenly before and after the existing channels (16 -> 32 pads 8 + 8), as in the reference
    code.  A module rather than a lambda so that the model pickles and deep-copies.
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_front = extra_channels // 2
        self.pad_back = extra_channels - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU.  ``(N, in_planes, H, W) -> (N, planes, H/s, W/s)``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            if planes < in_planes:
                raise ValueError(
                    f"planes must be >= in_planes={in_planes} for an option-A shortcut; got {planes}"
                )
            self.shortcut: nn.Module = _PadShortcut(stride, planes - in_planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet with a 3x3 stem and three stages of BasicBlocks (depth = 6n + 2 for ``num_blocks = (n, n, n)``).

    Stage widths ``widths`` (default 16/32/64), stride 2 at the start of stages 2 and 3, global average pooling and
    a classifier ``fc``.  Shortcuts are option A (identity, or strided subsampling with zero-padded channels; no
    parameters).  Conv and ``nn.Linear`` weights use Kaiming-normal (fan-in, ReLU gain); biases and BatchNorm keep
    PyTorch's defaults -- the initialisation of the LDAM-DRW / CB-loss CIFAR code.

    Args:
        num_blocks: blocks per stage.
        num_classes: outputs ``C``.
        in_channels: input channels (3 for CIFAR).
        widths: channels of the three stages.
        use_norm: :class:`NormedLinear` cosine head instead of :class:`torch.nn.Linear` (LDAM-DRW).

    Shapes: input ``(N, in_channels, H, W)`` (CIFAR: 32x32) -> logits ``(N, num_classes)``.  The classifier is
    the attribute ``fc`` (also the ``classifier`` property); :meth:`forward_features` returns the
    ``(N, widths[-1])`` embedding that feeds it.
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (5, 5, 5),
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        use_norm: bool = False,
    ) -> None:
        super().__init__()
        num_classes = check_num_classes(num_classes)
        in_channels = check_int("in_channels", in_channels, low=1)
        if len(num_blocks) != 3 or len(widths) != 3:
            raise ValueError(
                f"num_blocks and widths must have 3 stages each; got num_blocks={list(num_blocks)}, "
                f"widths={list(widths)}"
            )
        num_blocks = [check_int(f"num_blocks[{i}]", n, low=1) for i, n in enumerate(num_blocks)]
        widths = [check_int(f"widths[{i}]", w, low=1) for i, w in enumerate(widths)]
        if widths != sorted(widths):
            raise ValueError(f"widths must be non-decreasing (option-A shortcuts); got {widths}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_dim = widths[-1]

        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for stage, (n, planes) in enumerate(zip(num_blocks, widths)):
            stride = 1 if stage == 0 else 2
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc: nn.Module = linear_head(self.feature_dim, num_classes, use_norm)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone: ``(N, in_channels, H, W)`` -> ``(N, widths[-1])``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def resnet20(num_classes: int = 10, in_channels: int = 3, use_norm: bool = False) -> CifarResNet:
    """CIFAR ResNet-20 (3 x 3 blocks, ~0.27M parameters)."""
    return CifarResNet((3, 3, 3), num_classes, in_channels, use_norm=use_norm)


def resnet32(num_classes: int = 10, in_channels: int = 3, use_norm: bool = False) -> CifarResNet:
    """CIFAR ResNet-32 (3 x 5 blocks, 16/32/64 channels; 464,154 parameters for 10 classes).

    The network of the CB-loss, LDAM-DRW and CDB CIFAR-LT experiments.  Input ``(N, 3, 32, 32)``.
    """
    return CifarResNet((5, 5, 5), num_classes, in_channels, use_norm=use_norm)


def resnet44(num_classes: int = 10, in_channels: int = 3, use_norm: bool = False) -> CifarResNet:
    """CIFAR ResNet-44 (3 x 7 blocks, ~0.66M parameters)."""
    return CifarResNet((7, 7, 7), num_classes, in_channels, use_norm=use_norm)


def resnet56(num_classes: int = 10, in_channels: int = 3, use_norm: bool = False) -> CifarResNet:
    """CIFAR ResNet-56 (3 x 9 blocks, ~0.85M parameters)."""
    return CifarResNet((9, 9, 9), num_classes, in_channels, use_norm=use_norm)
