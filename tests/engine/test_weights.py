from __future__ import annotations

import io
import os
import pickle
import zipfile

import pytest
import torch
from safetensors import safe_open as _real_safe_open
from safetensors.torch import save_file

from engine.models.registry import get_spec
from engine.models.weights import (
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


@pytest.mark.slow  # builds ImageNet-size networks
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


def _deflated(state: dict[str, torch.Tensor], path) -> None:
    """``torch.save`` of ``state`` with its records compressed: a small file that inflates to the
    tensors' full size (torch.save itself never compresses)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for record in src.infolist():
            dst.writestr(record.filename, src.read(record.filename))


def test_a_zip_bomb_checkpoint_is_refused_before_anything_is_inflated(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pth"
    _deflated({"features.c1.weight": torch.zeros(16_000_000)}, path)  # 64 MB of zeros in about 64 kB
    assert path.stat().st_size < 1_000_000

    def no_load(*_args, **_kwargs):
        raise AssertionError("torch.load inflated the checkpoint")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(WeightsError) as e:
        load_model(get_spec("lenet5"), path)
    assert str(e.value).startswith("bomb.pth: refused, ") and "compressed records" in str(e.value)
    assert "would inflate to 64.0 MB from a 0.1 MB file" in str(e.value) and "\n" not in str(e.value)


class _HeaderOnly:
    """safetensors' safe_open that can read the header but no tensor data."""

    def __init__(self, *args, **kwargs) -> None:
        self._file = _real_safe_open(*args, **kwargs)

    def __enter__(self):
        self._file.__enter__()
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def keys(self):
        return self._file.keys()

    def get_slice(self, key):
        return self._file.get_slice(key)

    def get_tensor(self, key):
        raise AssertionError(f"read the data of {key}")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_tensor_larger_than_the_model_is_refused_from_the_header(tmp_path, monkeypatch, suffix):
    import engine.models.weights as weights

    spec = get_spec("lenet5")
    state = spec.build().state_dict()
    state["classifier.f6.weight"] = torch.zeros(4096, 2048)  # 32 MB where lenet5 has (84, 120)
    path = tmp_path / f"big{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)

    def no_reading(*_args, **_kwargs):
        raise AssertionError("read the tensors before checking their shapes")

    monkeypatch.setattr(weights, "load_file", no_reading, raising=False)
    monkeypatch.setattr(weights, "safe_open", _HeaderOnly, raising=False)
    real_load = torch.load

    def mapped_only(*args, **kwargs):  # a .pth is mapped, not read, until its shapes are known
        if not kwargs.get("mmap"):
            raise AssertionError("torch.load read the whole checkpoint")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", mapped_only)
    with pytest.raises(WeightsError) as e:
        load_model(spec, path)
    assert str(e.value) == (f"big{suffix}: classifier.f6.weight has shape (4096, 2048), lenet5 (cifar10) "
                            "needs (84, 120)")


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "holds NaN values"),
    (float("inf"), "holds infinite values"),
    (-float("inf"), "holds infinite values"),
    (1e300, "holds values too large for float32"),
])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_that_are_not_finite_are_refused(tmp_path, bad, message, suffix):
    spec = get_spec("lenet5")
    state = {k: v.double() for k, v in spec.build().state_dict().items()}
    state["features.c3.weight"][0, 0, 0, 0] = bad
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    with pytest.raises(WeightsError) as e:
        load_model(spec, path)
    assert str(e.value) == f"w{suffix}: features.c3.weight {message}"


def test_nan_in_an_int8_scale_is_refused(tmp_path):
    spec = get_spec("lenet5")
    path = save_weights(spec.build(), tmp_path / "q.safetensors", storage="int8")
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    tensors["features.c1.weight" + SCALE_SUFFIX][2] = float("nan")
    save_file(tensors, str(path))
    with pytest.raises(WeightsError, match=r"^q.safetensors: features.c1.weight holds NaN values$"):
        load_model(spec, path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64, torch.uint8], ids=str)
def test_weights_of_a_wrong_dtype_are_refused(tmp_path, dtype):
    spec = get_spec("lenet5")
    state = spec.build().state_dict()
    state["features.c1.weight"] = torch.zeros(state["features.c1.weight"].shape, dtype=dtype)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError) as e:
        load_model(spec, tmp_path / "w.pth")
    name = str(dtype).removeprefix("torch.")
    assert str(e.value) == f"w.pth: features.c1.weight is {name}, lenet5 (cifar10) needs floating-point values there"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)  # float32: every other test
def test_every_floating_dtype_loads_and_integer_buffers_stay_integers(tmp_path, dtype):
    spec = get_spec("enet")  # batch norm: num_batches_tracked is an int64 buffer in every real checkpoint
    model = spec.build()
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    assert any(k.endswith("num_batches_tracked") and v.dtype == torch.int64 for k, v in state.items())
    torch.save(state, tmp_path / "w.pth")
    loaded = load_model(spec, tmp_path / "w.pth")
    assert loaded.status == CUSTOM
    for key, value in loaded.model.state_dict().items():
        assert value.dtype == model.state_dict()[key].dtype


def test_an_integer_buffer_saved_as_a_float_is_refused(tmp_path):
    spec = get_spec("enet")
    torch.save({k: v.float() for k, v in spec.build().state_dict().items()}, tmp_path / "f.pth")
    with pytest.raises(WeightsError, match=r"num_batches_tracked is float32, enet \(cifar10\) needs integer values"):
        load_model(spec, tmp_path / "f.pth")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_not_a_weights_file(tmp_path):
    os.mkfifo(tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=r"^w.pth: not a regular file$"):
        load_model(get_spec("lenet5"), tmp_path / "w.pth")
