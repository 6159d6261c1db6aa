"""Device choice: auto picks the best available; an unavailable or unknown device is a DeviceError."""
from __future__ import annotations

import pytest
import torch

from mvdust3r_blender.engine.devices import available_devices, resolve_device
from mvdust3r_blender.engine.errors import DeviceError


def test_auto_is_the_best_available_and_cpu_always_works():
    found = available_devices()
    assert found[-1] == "cpu" and found == [d for d in ("cuda", "mps", "cpu") if d in found]
    assert resolve_device("auto") == torch.device(found[0])
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("") == torch.device(found[0])


def test_unavailable_device_names_what_is_available():
    missing = [d for d in ("cuda", "mps") if d not in available_devices()]
    assert missing, "this test needs a machine lacking CUDA or MPS"
    with pytest.raises(DeviceError, match=f"device '{missing[0]}' is not available") as info:
        resolve_device(missing[0])
    assert "cpu" in info.value.hint and info.value.code == "device"


@pytest.mark.parametrize("bad", ["tpu", "mps:0", "gpu"])
def test_unknown_device_names_the_choices(bad):
    with pytest.raises(DeviceError, match="unknown device") as info:
        resolve_device(bad)
    assert "auto, cuda, mps, cpu" in info.value.hint


def test_cuda_index_must_exist():
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="not available"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(DeviceError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
        assert resolve_device("cuda:0") == torch.device("cuda:0")
