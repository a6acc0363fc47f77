"""ENet (Paszke, Chaurasia, Kim, Culurciello 2016, "ENet: A Deep Neural Network Architecture for
Real-Time Semantic Segmentation", arXiv:1606.02147), in the authors' configuration.

Encoder: an initial block (3x3 stride-2 conv beside a 2x2 max pool, concatenated to 16 channels),
stage 1 (downsampling bottleneck 1.0 to 64 channels and four regular bottlenecks, spatial dropout
0.01), stage 2 (downsampling 2.0 to 128 channels, then regular, dilated 2, asymmetric 5, dilated 4,
regular, dilated 8, asymmetric 5, dilated 16; dropout 0.1) and stage 3 (stage 2 without 2.0).
Decoder: upsampling bottlenecks 4.0 (to 64) and 5.0 (to 16), whose main branches max-unpool with the
indices of 2.0's and 1.0's max pools, with two and one regular bottlenecks after them, ReLU instead
of PReLU and no dropout, then a 2x2 stride-2 transposed conv (``fullconv``) to per-pixel logits at
the input resolution.

Pooling indices travel on an explicit per-call stack: every stage takes ``pool_indices``, a list
that the downsampling blocks push a :class:`PoolRecord` onto and the upsampling blocks pop from
(4.0 gets 2.0's, 5.0 gets 1.0's). Each named block therefore returns a plain tensor, so forward
hooks on ``initial``, ``stage2``, ``stage2.bottleneck2_4`` and the like see that block's output, and
no state is left on the modules between calls.

Deviations and limits, stated plainly:

- Convolutions followed by batch norm have no bias. The authors' Torch code keeps one on the
  initial conv, the 3x3 / dilated / second asymmetric conv of every bottleneck and the decoder's
  3x3 transposed convs; batch norm cancels those, so dropping them changes nothing the network can
  express. That is 693 fewer parameters: 363,618 for 19 classes instead of 364,311.
- Batch norm uses eps=1e-3, as the authors did, not PyTorch's default 1e-5.
- H and W must be divisible by 8 for the decoder (the input is halved three times and the
  transposed convs can only double). The encoder alone (``ENetClassifier.forward``) takes any even
  size.
- At CIFAR-10's 32x32 the encoder ends at 4x4. The dilation-4, -8 and -16 blocks still run, zero
  padded, but on a 4x4 map every off-centre tap of their 3x3 kernels lands in the padding, so there
  they act as 1x1 convolutions. At 224x224 the encoder ends at 28x28 and they work as designed.
- :class:`ENetClassifier` is this project's addition for image classification: the same network
  plus a global average pool of stage 3's output and a linear ``head``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

_BN_EPS = 1e-3
# Stages 2 and 3 after their first block; None marks an asymmetric 5x1 + 1x5 block.
_STAGE_2_3_DILATIONS: tuple[int | None, ...] = (1, 2, None, 4, 1, 8, None, 16)


class PoolRecord(NamedTuple):
    """A downsampling block's max-pool indices and the spatial size before the pool."""

    indices: torch.Tensor
    size: torch.Size


def _activation(channels: int, decoder: bool) -> nn.Module:
    return nn.ReLU() if decoder else nn.PReLU(num_parameters=channels)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


def _conv_bn_act(conv: nn.Conv2d, decoder: bool = False) -> nn.Sequential:
    return nn.Sequential(conv, _bn(conv.out_channels), _activation(conv.out_channels, decoder))


def _expand(internal: int, out_channels: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(internal, out_channels, 1, bias=False), _bn(out_channels)]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class _ChannelCopy:  # a change here changes the exported graph: bump backend.EXPORT_FORMAT
    """A block's main branch joined to its side as a 1x1 convolution, for the ONNX export only.

    ONNX Runtime runs convolutions in a blocked channel layout and keeps a tensor in it only through
    the operators it has blocked forms for (convolutions, Add, Relu, pools without indices). A main
    branch that is sliced and concatenated (the downsampling blocks' zero-padding) or scattered (the
    upsampling blocks' unpool) reaches the residual Add in plain layout, so that Add and every block
    after it until the next convolution-only path reorders its tensors both ways. Copying the main
    branch's channels with a 1x1 convolution (identity weights on its own channels, zeros after)
    brings it into the blocked layout, and ONNX Runtime folds the Add into that convolution. The
    values are the same for finite inputs (a zero weight times an infinity is NaN). The weights are
    a plain attribute, not a parameter or buffer: checkpoints and the weights digest are unchanged."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        if in_channels == out_channels:  # one weight per channel: a depthwise convolution
            self.weight, self.groups = torch.ones(out_channels, 1, 1, 1), out_channels
        else:
            self.weight, self.groups = torch.zeros(out_channels, in_channels, 1, 1), 1
            self.weight[:in_channels, :, 0, 0] = torch.eye(in_channels)

    def __call__(self, main: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(main, self.weight.to(main), groups=self.groups)


class InitialBlock(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 16) -> None:
        super().__init__()
        if not 0 < in_channels < out_channels:
            raise ValueError(f"ENet takes 1 to {out_channels - 1} input channels, got {in_channels}")
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = _bn(out_channels)
        self.act = nn.PReLU(num_parameters=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat((self.conv(x), self.pool(x)), dim=1)))


class Bottleneck(nn.Module):
    """Regular, dilated (``dilation`` > 1) or asymmetric bottleneck with an identity shortcut."""

    def __init__(self, channels: int, dilation: int = 1, asymmetric: bool = False,
                 dropout: float = 0.0, decoder: bool = False) -> None:
        super().__init__()
        internal = channels // 4
        self.reduce = _conv_bn_act(nn.Conv2d(channels, internal, 1, bias=False), decoder)
        if asymmetric:
            self.conv = nn.Sequential(
                nn.Conv2d(internal, internal, (5, 1), padding=(2, 0), bias=False),
                nn.Conv2d(internal, internal, (1, 5), padding=(0, 2), bias=False),
                _bn(internal), _activation(internal, decoder),
            )
        else:
            self.conv = _conv_bn_act(
                nn.Conv2d(internal, internal, 3, padding=dilation, dilation=dilation, bias=False), decoder)
        self.expand = _expand(internal, channels, dropout)
        self.act = _activation(channels, decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.expand(self.conv(self.reduce(x))))


class DownsamplingBottleneck(nn.Module):
    """Halves H and W; pushes its pool's indices onto ``pool_indices`` for the decoder."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        internal = out_channels // 4
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.reduce = _conv_bn_act(nn.Conv2d(in_channels, internal, 2, stride=2, bias=False))
        self.conv = _conv_bn_act(nn.Conv2d(internal, internal, 3, padding=1, bias=False))
        self.expand = _expand(internal, out_channels, dropout)
        self.act = nn.PReLU(num_parameters=out_channels)
        self._join: _ChannelCopy | None = None  # set by prepare_export

    def prepare_export(self) -> None:  # a change here: bump backend.EXPORT_FORMAT
        """Join the main branch by a convolution (:class:`_ChannelCopy`); for a private copy only."""
        self._join = _ChannelCopy(self.reduce[0].in_channels, self.expand[0].out_channels)

    def forward(self, x: torch.Tensor, pool_indices: list[PoolRecord] | None = None) -> torch.Tensor:
        main, indices = self.pool(x)
        if pool_indices is not None:
            pool_indices.append(PoolRecord(indices, x.shape[-2:]))
        side = self.expand(self.conv(self.reduce(x)))
        if self._join is not None:
            return self.act(side + self._join(main))
        # The main branch is zero-padded to the output width; adding it to the first channels only
        # skips allocating and adding a mostly-zero tensor. Not in place, so a hook holding the
        # batch norm's output keeps what it saw.
        c = main.shape[1]
        return self.act(torch.cat((side[:, :c] + main, side[:, c:]), dim=1))


class Unpool(nn.Module):
    """Max-unpooling written as the scatter it is: each value back to the flat position its pool
    took it from, zeros elsewhere. The same numbers as ``nn.MaxUnpool2d``, as a graph torch's
    TorchScript ONNX exporter can translate (it has no ``max_unpool2d``): ENet then exports in half
    a second instead of five (engine.runtime.backends). No parameters: checkpoints are unchanged."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        n, c = x.shape[:2]
        h, w = size
        return x.new_zeros((n, c, h * w)).scatter(2, indices.flatten(2), x.flatten(2)).view(n, c, h, w)


class UpsamplingBottleneck(nn.Module):
    """Doubles H and W; the main branch unpools with the matching encoder pool's indices."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        internal = out_channels // 4
        self.main = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _bn(out_channels))
        self.unpool = Unpool()
        self.reduce = _conv_bn_act(nn.Conv2d(in_channels, internal, 1, bias=False), decoder=True)
        self.upconv = nn.ConvTranspose2d(internal, internal, 3, stride=2, padding=1, bias=False)
        self.upconv_post = nn.Sequential(_bn(internal), nn.ReLU())
        self.expand = _expand(internal, out_channels, dropout=0.0)
        self.act = nn.ReLU()
        self._join: _ChannelCopy | None = None  # set by prepare_export

    def prepare_export(self) -> None:  # a change here: bump backend.EXPORT_FORMAT
        """Join the main branch by a convolution (:class:`_ChannelCopy`); for a private copy only."""
        self._join = _ChannelCopy(self.main[0].out_channels, self.main[0].out_channels)

    def forward(self, x: torch.Tensor, pooled: PoolRecord) -> torch.Tensor:
        h, w = (int(s) for s in pooled.size)
        main = self.unpool(self.main(x), pooled.indices, (h, w))
        side = self.expand(self.upconv_post(self.upconv(self.reduce(x), output_size=[h, w])))
        if self._join is not None:
            return self.act(side + self._join(main))
        return self.act(main + side)


class Stage(nn.Module):
    """Named bottlenecks run in order, threading the pooling-index stack through them."""

    # A layer picker lists this stage's bottlenecks one by one, as it does a Sequential's layers.
    groups_layers = True

    def __init__(self, blocks: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, block in blocks.items():
            self.add_module(name, block)

    def forward(self, x: torch.Tensor, pool_indices: list[PoolRecord] | None = None) -> torch.Tensor:
        for block in self.children():
            if isinstance(block, DownsamplingBottleneck):
                x = block(x, pool_indices)
            elif isinstance(block, UpsamplingBottleneck):
                if not pool_indices:
                    raise RuntimeError("an upsampling bottleneck ran without its encoder's pooling indices")
                x = block(x, pool_indices.pop())
            else:
                x = block(x)
        return x


def _stage_2_3(stage: int, dropout: float) -> dict[str, nn.Module]:
    return {
        f"bottleneck{stage}_{i}": Bottleneck(128, dilation=d or 1, asymmetric=d is None, dropout=dropout)
        for i, d in enumerate(_STAGE_2_3_DILATIONS, start=1)
    }


class ENet(nn.Module):
    """ENet for semantic segmentation: ``forward(x)`` gives (N, num_classes, H, W) logits."""

    def __init__(self, num_classes: int = 19, in_channels: int = 3) -> None:
        super().__init__()
        self.initial = InitialBlock(in_channels, 16)
        self.stage1 = Stage({
            "bottleneck1_0": DownsamplingBottleneck(16, 64, dropout=0.01),
            **{f"bottleneck1_{i}": Bottleneck(64, dropout=0.01) for i in range(1, 5)},
        })
        self.stage2 = Stage({
            "bottleneck2_0": DownsamplingBottleneck(64, 128, dropout=0.1),
            **_stage_2_3(2, dropout=0.1),
        })
        self.stage3 = Stage(_stage_2_3(3, dropout=0.1))
        self.stage4 = Stage({
            "bottleneck4_0": UpsamplingBottleneck(128, 64),
            "bottleneck4_1": Bottleneck(64, decoder=True),
            "bottleneck4_2": Bottleneck(64, decoder=True),
        })
        self.stage5 = Stage({
            "bottleneck5_0": UpsamplingBottleneck(64, 16),
            "bottleneck5_1": Bottleneck(16, decoder=True),
        })
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 2, stride=2)

    def encode(self, x: torch.Tensor, pool_indices: list[PoolRecord] | None = None) -> torch.Tensor:
        """Stage 3's 128-channel output at 1/8 resolution; pools push onto ``pool_indices``."""
        x = self.initial(x)
        x = self.stage1(x, pool_indices)
        x = self.stage2(x, pool_indices)
        return self.stage3(x, pool_indices)

    def decode(self, x: torch.Tensor, pool_indices: list[PoolRecord]) -> torch.Tensor:
        return self.fullconv(self.stage5(self.stage4(x, pool_indices), pool_indices))

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stage 3's output, per-pixel logits) from one pass through encoder and decoder."""
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"ENet's decoder needs H and W divisible by 8, got {h}x{w}")
        pool_indices: list[PoolRecord] = []
        features = self.encode(x, pool_indices)
        return features, self.decode(features, pool_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segment(x)[1]


class ENetClassifier(ENet):
    """ENet plus an image-level head on the encoder: global average pool -> ``head``.

    ``forward`` runs only the encoder and the head (so hooks on ``stage4``, ``stage5`` and
    ``fullconv`` do not fire there); ``forward_with_map`` runs the whole network once.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels)
        self.head = nn.Linear(128, num_classes)

    def _classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._classify(self.encode(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's last map (stage 3, 128 channels at 1/8 of the input)."""
        return self.encode(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self._classify(features)

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image logits (N, C), per-pixel logits (N, C, H, W))."""
        features, pixel_logits = self.segment(x)
        return self._classify(features), pixel_logits


def enet(*, num_classes: int = 10, weights: None = None) -> ENetClassifier:
    """ENet with an image-level head, for RGB input. No pretrained ENet weights exist to load."""
    if weights is not None:
        raise ValueError("ENet has no published pretrained weights to load")
    return ENetClassifier(num_classes=num_classes)
