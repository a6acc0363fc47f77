"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition").

C1 6@5x5 -> S2 2x2 subsampling -> C3 16@5x5 -> S4 -> C5 120@5x5 -> F6 84 -> output, with tanh
squashing and average-pool subsampling as in the paper. Two deliberate simplifications, both
standard: S2/S4 are plain average pools (the paper's have a trainable gain and bias), and C3 is
fully connected to S2's six maps (the paper's sparse connection table saved 1998's compute). The
output is a linear layer rather than Euclidean RBF units, so the network trains with cross-entropy.

C5 sees a 1x1 map at the native 32x32 input. At any other size an adaptive average pool (a no-op at
32x32) squeezes C5's map to 1x1, so the same network runs at 224x224 for timing and feature maps.
With 3 input channels and 10 classes it has 62,006 parameters.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("c1", nn.Conv2d(in_channels, 6, kernel_size=5)),
            ("tanh1", nn.Tanh()),
            ("s2", nn.AvgPool2d(2)),
            ("c3", nn.Conv2d(6, 16, kernel_size=5)),
            ("tanh3", nn.Tanh()),
            ("s4", nn.AvgPool2d(2)),
            ("c5", nn.Conv2d(16, 120, kernel_size=5)),
            ("tanh5", nn.Tanh()),
        ]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(OrderedDict([
            ("f6", nn.Linear(120, 84)),
            ("tanh6", nn.Tanh()),
            ("output", nn.Linear(84, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def lenet5(*, num_classes: int = 10, weights: None = None) -> LeNet5:
    """LeNet-5 for RGB input. No pretrained weights exist outside this project's own."""
    if weights is not None:
        raise ValueError("LeNet-5 has no published pretrained weights to load")
    return LeNet5(num_classes=num_classes)
