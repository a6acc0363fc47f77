from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from engine.models.registry import get_spec
from engine.weights import (
    CUSTOM,
    DOWNLOADED,
    FILE_BUDGET_BYTES,
    SCALE_SUFFIX,
    UNTRAINED,
    WeightsError,
    as_stored,
    atomic_write,
    hub_cache_path,
    load_model,
    read_state_dict,
    resolve,
    save_weights,
    storage_for,
)


def test_missing_default_weights_mean_untrained_not_an_error(tmp_path):
    loaded = load_model(get_spec("vgg16"), weights_dir=tmp_path)
    assert loaded.status == UNTRAINED and "missing" in loaded.source


def test_roundtrip_fp16_with_metrics(tmp_path):
    spec = get_spec("lenet5")
    model = spec.build()
    save_weights(model, tmp_path / spec.weights, {"test_top1": 0.61})
    loaded = load_model(spec, weights_dir=tmp_path)
    assert loaded.status == "bundled" and loaded.metrics == {"test_top1": 0.61}
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), model(x), atol=2e-2, rtol=1e-2)


def test_int8_storage_halves_the_file_and_keeps_the_answers(tmp_path):
    spec = get_spec("alexnet")
    model = spec.build().eval()
    half, small = tmp_path / "half.safetensors", tmp_path / "small.safetensors"
    save_weights(model, half)
    save_weights(model, small, storage="int8")
    assert small.stat().st_size < 0.55 * half.stat().st_size
    loaded = load_model(spec, small)
    c1 = loaded.model.features.conv1.weight
    assert c1.dtype == torch.float32 and SCALE_SUFFIX not in "".join(loaded.model.state_dict())
    # one scale per output channel: each channel's largest weight comes back almost exactly
    step = model.features.conv1.weight.abs().amax(dim=(1, 2, 3)) / 127
    assert ((c1 - model.features.conv1.weight).abs().amax(dim=(1, 2, 3)) <= step / 2 + 1e-6).all()
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), model(x), atol=5e-2, rtol=5e-2)
        stored = as_stored(model, "int8")  # what training evaluates is what the file gives back
        torch.testing.assert_close(stored(x), loaded.model(x))


def test_only_a_network_too_large_for_fp16_is_stored_as_int8():
    assert storage_for(get_spec("lenet5").build()) == "fp16"
    assert storage_for(get_spec("vgg16").build()) == "int8"  # 14.7 M parameters: 29 MB in fp16
    assert 2 * 14_724_042 > FILE_BUDGET_BYTES > 2 * 5_870_000


def test_pth_state_dict_loads(tmp_path):
    spec = get_spec("lenet5")
    model = spec.build()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pth")
    loaded = load_model(spec, tmp_path / "ckpt.pth")
    assert loaded.status == CUSTOM
    assert torch.equal(loaded.model.features.c1.weight, model.features.c1.weight)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnn-arena-pwned",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/cnn-arena-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": Exploit()}, f)
    with pytest.raises(WeightsError, match="evil.pth: "):
        read_state_dict(path)
    assert not os.path.exists(marker)
    torch.save({"w": Exploit()}, tmp_path / "evil2.pth")  # the zip format, same refusal
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(WeightsError, match="refused"):
        read_state_dict(tmp_path / "evil2.pth")
    assert not os.path.exists(marker)


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b"\x10\x00\x00\x00\x00\x00\x00\x00{", "corrupt")])
def test_corrupt_safetensors(tmp_path, content, message):
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_model(get_spec("lenet5"), path)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v for k, v in get_spec("lenet5").build().state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError) as e:
        load_model(get_spec("lenet5"), path)
    assert "\n" not in str(e.value)


def test_wrong_model_and_wrong_profile_are_explained(tmp_path):
    save_weights(get_spec("alexnet").build(), tmp_path / "alex.safetensors")
    with pytest.raises(WeightsError, match="not weights for lenet5"):
        load_model(get_spec("lenet5"), tmp_path / "alex.safetensors")
    save_weights(get_spec("lenet5", "imagenet").build(), tmp_path / "lenet_in.safetensors")
    with pytest.raises(WeightsError, match="1000-class head"):
        load_model(get_spec("lenet5", "cifar10"), tmp_path / "lenet_in.safetensors")


def test_torchvision_weights_load_from_a_prepared_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_spec("alexnet", "imagenet")
    assert resolve(spec).status == UNTRAINED and "not downloaded" in resolve(spec).source
    # A cache file as torchvision's own download would leave it (original layer names).
    import torchvision
    reference = torchvision.models.alexnet()
    path = hub_cache_path(spec)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    assert resolve(spec).status == DOWNLOADED
    loaded = load_model(spec)  # no network: only the cache
    assert loaded.status == DOWNLOADED
    assert torch.equal(loaded.model.features.conv1.weight, reference.features[0].weight)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def failing(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
