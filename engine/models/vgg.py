"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"), configurations A, B, D and E (11, 13, 16 and 19 weight layers).

Stacks of 3x3 convolutions (padding 1) separated by 2x2 max pools, with or without batch norm after
every convolution. Layers are named after the paper's blocks: ``features.conv3_2`` is the second
convolution of block 3, followed by ``bn3_2`` (batch-norm variants) and ``relu3_2``; ``pool3`` ends
the block.

- ImageNet (224x224): torchvision's builders (``vgg16`` has 138,357,544 parameters), renamed.
- CIFAR-10 (32x32): the same convolutional configurations with batch norm; five pools leave a
  1x1x512 map, so the three 4096-wide layers (120M parameters meant for a 7x7 map) become one
  dropout + 512 -> 10 linear head. VGG-16 in this form has 14,724,042 parameters.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torchvision

from engine.models.alexnet import _rename

# Output widths of the 3x3 convolutions, "M" for a 2x2 max pool: the paper's table 1.
CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


def feature_names(depth: int, batch_norm: bool) -> list[str]:
    """Readable names for the layers of ``features``, in order."""
    names, block, conv = [], 1, 1
    for item in CONFIGS[depth]:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names.append(f"conv{block}_{conv}")
            if batch_norm:
                names.append(f"bn{block}_{conv}")
            names.append(f"relu{block}_{conv}")
            conv += 1
    return names


def make_features(depth: int, batch_norm: bool, in_channels: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in CONFIGS[depth]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(item)))
            layers.append(nn.ReLU(inplace=True))
            in_channels = int(item)
    return _rename(nn.Sequential(*layers), feature_names(depth, batch_norm))


class VGGCifar(nn.Module):
    def __init__(self, depth: int = 16, num_classes: int = 10, *, batch_norm: bool = True,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.features = make_features(depth, batch_norm)
        self.pool = nn.AdaptiveMaxPool2d(1)  # a no-op at 32x32; lets larger inputs through
        self.classifier = nn.Sequential(OrderedDict([
            ("drop", nn.Dropout(dropout)),
            ("fc", nn.Linear(512, num_classes)),
        ]))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg_cifar(depth: int, *, num_classes: int = 10, weights: None = None) -> VGGCifar:
    """VGG-``depth`` with batch norm sized for 32x32 input (module docstring)."""
    if weights is not None:
        raise ValueError("the CIFAR form of VGG loads only this project's own weights")
    return VGGCifar(depth, num_classes=num_classes)


_CLASSIFIER_NAMES = ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]


def vgg_imagenet(depth: int, batch_norm: bool = False, *, num_classes: int = 1000, weights=None,
                 progress: bool = True) -> nn.Module:
    """torchvision's VGG-``depth`` (``weights`` as its weights API takes them), layers renamed."""
    builder = getattr(torchvision.models, f"vgg{depth}{'_bn' if batch_norm else ''}")
    model = builder(weights=weights, progress=progress,
                    **({} if weights is not None else {"num_classes": num_classes}))
    model.features = _rename(model.features, feature_names(depth, batch_norm))
    model.classifier = _rename(model.classifier, _CLASSIFIER_NAMES)
    return model
