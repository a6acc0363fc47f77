from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from engine.models.enet import ENet, ENetClassifier, enet

BLOCK_NAMES = (
    ["initial"]
    + [f"stage1.bottleneck1_{i}" for i in range(5)]
    + [f"stage2.bottleneck2_{i}" for i in range(9)]
    + [f"stage3.bottleneck3_{i}" for i in range(1, 9)]
    + [f"stage4.bottleneck4_{i}" for i in range(3)]
    + [f"stage5.bottleneck5_{i}" for i in range(2)]
    + ["fullconv"]
)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _capture(model: nn.Module, names: list[str]) -> tuple[dict[str, object], list]:
    outputs: dict[str, object] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, _a, out, name=name: outputs.__setitem__(name, out))
        for name in names
    ]
    return outputs, handles


@pytest.fixture(scope="module")
def seg() -> ENet:
    torch.manual_seed(0)
    return ENet(num_classes=19).eval()


def test_parameter_count(seg: ENet) -> None:
    n = _count(seg)
    assert n == 363_618  # the paper's 0.37M; 364,311 with the redundant pre-BN biases of the Torch code
    assert 330_000 < n < 380_000
    assert _count(enet(num_classes=10)) == 363_618 - 9 * 16 * 4 - 9 + 128 * 10 + 10


@pytest.mark.parametrize("shape", [(1, 3, 512, 512), (2, 3, 64, 64), (1, 3, 40, 72)])
def test_per_pixel_logits_at_input_resolution(seg: ENet, shape: tuple[int, ...]) -> None:
    with torch.inference_mode():
        out = seg(torch.randn(shape))
    assert out.shape == (shape[0], 19, *shape[2:])


def test_decoder_rejects_sizes_not_divisible_by_8(seg: ENet) -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        seg(torch.randn(1, 3, 36, 36))


@pytest.mark.parametrize("size", [64, 32])
def test_stage_output_shapes(seg: ENet, size: int) -> None:
    stages = ["initial", "stage1", "stage2", "stage3", "stage4", "stage5", "fullconv"]
    outputs, handles = _capture(seg, stages)
    with torch.inference_mode():
        seg(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    s = size
    assert {name: tuple(out.shape) for name, out in outputs.items()} == {
        "initial": (1, 16, s // 2, s // 2),
        "stage1": (1, 64, s // 4, s // 4),
        "stage2": (1, 128, s // 8, s // 8),
        "stage3": (1, 128, s // 8, s // 8),
        "stage4": (1, 64, s // 4, s // 4),
        "stage5": (1, 16, s // 2, s // 2),
        "fullconv": (1, 19, s, s),
    }


def test_every_named_block_hands_its_hook_a_tensor(seg: ENet) -> None:
    outputs, handles = _capture(seg, BLOCK_NAMES)
    with torch.inference_mode():
        seg(torch.randn(1, 3, 32, 32))
    for h in handles:
        h.remove()
    assert set(outputs) == set(BLOCK_NAMES)
    assert all(isinstance(out, torch.Tensor) for out in outputs.values())


def test_decoder_unpools_with_the_encoders_indices(seg: ENet) -> None:
    modules = dict(seg.named_modules())
    pooled: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    unpooled: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def on_pool(name: str):
        return lambda _m, _args, out: pooled.__setitem__(name, out)

    def on_unpool(name: str):
        return lambda _m, args, out: unpooled.__setitem__(name, (args[0], args[1], out))

    handles = [modules[f"{b}.pool"].register_forward_hook(on_pool(b))
               for b in ("stage1.bottleneck1_0", "stage2.bottleneck2_0")]
    handles += [modules[f"{b}.unpool"].register_forward_hook(on_unpool(b))
                for b in ("stage4.bottleneck4_0", "stage5.bottleneck5_0")]
    with torch.inference_mode():
        seg(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()

    pairs = {"stage4.bottleneck4_0": "stage2.bottleneck2_0", "stage5.bottleneck5_0": "stage1.bottleneck1_0"}
    for up, down in pairs.items():
        values, indices = unpooled[up][0], unpooled[up][1]
        assert indices is pooled[down][1]
        # By hand: scatter each value to the flat position its encoder max came from.
        n, c, h, w = pooled[down][0].shape
        expected = torch.zeros(n, c, 2 * h * 2 * w).scatter_(2, indices.flatten(2), values.flatten(2))
        assert torch.equal(unpooled[up][2], expected.view(n, c, 2 * h, 2 * w))
        assert (unpooled[up][2] != 0).sum() <= values.numel()  # a sparse map, not an interpolation


def test_the_blocks_export_form_gives_the_same_numbers(seg: ENet) -> None:
    """prepare_export joins the down- and upsampling blocks' main branches by a 1x1 convolution
    (for ONNX Runtime's blocked layout): every block's output is bit for bit what it was, and the
    parameters, buffers and their names are untouched."""
    import copy

    export = copy.deepcopy(seg)
    prepared = [name for name, m in export.named_modules() if hasattr(m, "prepare_export")]
    assert prepared == ["stage1.bottleneck1_0", "stage2.bottleneck2_0", "stage4.bottleneck4_0",
                        "stage5.bottleneck5_0"]
    for name in prepared:
        export.get_submodule(name).prepare_export()
        assert export.get_submodule(name)._join is not None
    state, before = export.state_dict(), seg.state_dict()
    assert list(state) == list(before) and all(torch.equal(state[k], before[k]) for k in state)
    x = torch.randn(2, 3, 64, 64)
    expected, handles = _capture(seg, BLOCK_NAMES)
    got, more = _capture(export, BLOCK_NAMES)
    with torch.inference_mode():
        seg(x)
        export(x)
    for h in handles + more:
        h.remove()
    assert all(torch.equal(got[name], expected[name]) for name in BLOCK_NAMES)


def test_classifier_outputs_and_names() -> None:
    torch.manual_seed(0)
    model = enet(num_classes=10).eval()
    assert isinstance(model, ENetClassifier)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        logits = model(x)
        image_logits, pixel_logits = model.forward_with_map(x)
    assert logits.shape == (2, 10)
    assert image_logits.shape == (2, 10)
    assert pixel_logits.shape == (2, 10, 32, 32)
    torch.testing.assert_close(logits, image_logits)
    names = dict(model.named_modules())
    for name in ("initial", "stage2.bottleneck2_4", "fullconv", "head", *BLOCK_NAMES):
        assert name in names
    assert [n for n, _ in model.named_children()] == [
        "initial", "stage1", "stage2", "stage3", "stage4", "stage5", "fullconv", "head"]


def test_classifier_trains_through_both_outputs() -> None:
    torch.manual_seed(0)
    model = enet(num_classes=10).train()
    image_logits, pixel_logits = model.forward_with_map(torch.randn(2, 3, 32, 32))
    target = torch.tensor([1, 7])
    loss = nn.functional.cross_entropy(image_logits, target)
    loss = loss + nn.functional.cross_entropy(pixel_logits.mean((2, 3)), target)
    loss.backward()
    for name in ("initial.conv.weight", "stage3.bottleneck3_8.conv.0.weight", "fullconv.weight", "head.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_builder_refuses_weights() -> None:
    with pytest.raises(ValueError, match="no published pretrained weights"):
        enet(weights="x")
