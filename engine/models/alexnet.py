"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, "ImageNet Classification with Deep Convolutional
Neural Networks").

Two forms with the paper's structure: five convolutions (the first with the largest kernel), ReLU,
overlapping 3x3 stride-2 max pooling after conv1, conv2 and conv5, and three fully connected layers
with dropout 0.5 before the first two.

- ImageNet (224x224): torchvision's ``alexnet`` (the single-tower "one weird trick" variant,
  61,100,840 parameters, no LRN), with its layers renamed to the paper's names.
- CIFAR-10 (32x32): the same structure sized for a 32x32 input. conv1 is 64@5x5 stride 1 (an 11x11
  stride-4 kernel would reduce a 32x32 image to 6x6 at once), conv2 192@5x5, conv3-5 384/256/256@3x3,
  the three overlapping pools take 32 -> 15 -> 7 -> 3, and the fully connected layers are 1024 wide
  (4096 would be 30M parameters for 10 classes). Optional local response normalisation after conv1
  and conv2 as in the paper (``lrn=True``); off by default, since it costs time and adds nothing
  measurable with modern training.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torchvision


def _rename(seq: nn.Sequential, names: list[str]) -> nn.Sequential:
    """The same layers (and weights) under readable names."""
    layers = list(seq)
    if len(layers) != len(names):
        raise ValueError(f"expected {len(names)} layers, found {len(layers)}")
    return nn.Sequential(OrderedDict(zip(names, layers)))


_FEATURE_NAMES = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
                  "conv4", "relu4", "conv5", "relu5", "pool5"]
_CLASSIFIER_NAMES = ["drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"]


class AlexNetCifar(nn.Module):
    def __init__(self, num_classes: int = 10, *, lrn: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        def norm(name: str) -> list[tuple[str, nn.Module]]:
            return [(name, nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))] if lrn else []

        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 64, kernel_size=5, padding=2)),
            ("relu1", nn.ReLU(inplace=True)),
            *norm("norm1"),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv2", nn.Conv2d(64, 192, kernel_size=5, padding=2)),
            ("relu2", nn.ReLU(inplace=True)),
            *norm("norm2"),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv3", nn.Conv2d(192, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(256, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),
        ]))
        # 3x3 at the native input; other sizes are pooled to it so the head always fits.
        self.avgpool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Sequential(OrderedDict([
            ("drop6", nn.Dropout(dropout)),
            ("fc6", nn.Linear(256 * 3 * 3, 1024)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc7", nn.Linear(1024, 1024)),
            ("relu7", nn.ReLU(inplace=True)),
            ("fc8", nn.Linear(1024, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def alexnet_cifar(*, num_classes: int = 10, weights: None = None, lrn: bool = False) -> AlexNetCifar:
    """AlexNet sized for 32x32 input (module docstring). Trained weights are the project's own."""
    if weights is not None:
        raise ValueError("the CIFAR form of AlexNet loads only this project's own weights")
    return AlexNetCifar(num_classes=num_classes, lrn=lrn)


def alexnet_imagenet(*, num_classes: int = 1000, weights=None, progress: bool = True) -> nn.Module:
    """torchvision's AlexNet (``weights`` as its weights API takes them), layers renamed."""
    model = torchvision.models.alexnet(weights=weights, progress=progress,
                                       **({} if weights is not None else {"num_classes": num_classes}))
    model.features = _rename(model.features, _FEATURE_NAMES)
    model.classifier = _rename(model.classifier, _CLASSIFIER_NAMES)
    return model
