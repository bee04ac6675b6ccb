"""The export stage measures the exported model on every measured target's own runtime."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

from nasq.hardware import HardwareProfile
from nasq.profiling.layer_models import static_subnet
from nasq.space import SearchSpace
from nasq.stages.export import measure_targets, run_profiles
from nasq.supernet.evaluate import accuracy
from nasq.supernet.network import Supernet

REPO = Path(__file__).resolve().parents[2]


def _profile(tmp_path: Path, name: str, backend: str) -> HardwareProfile:
    data = yaml.safe_load((REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml").read_text())
    data.update(name=name, backend=backend)
    path = tmp_path / name / "profile.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return HardwareProfile.from_yaml(path)


def test_every_measured_target_times_and_checks_the_export(tmp_path):
    space = SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Supernet(space)
    spec = space.sample(np.random.default_rng(3), 1)[0]
    model = static_subnet(net, spec, gen)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()  # labels = torch's own predictions
    y[::4] = (y[::4] + 1) % 10  # a quarter wrong, so top-1 is not trivially 100
    splits = SimpleNamespace(val_x=x, val_y=y)
    profiles = [_profile(tmp_path, "ort_t", "onnxruntime"), _profile(tmp_path, "ov_t", "openvino"),
                _profile(tmp_path, "model_t", "roofline")]
    got = measure_targets(model, profiles, splits, SimpleNamespace(val_images=None), warmup=1, repeats=3)
    assert set(got) == {"latency_ms@ort_t", "top1_val@ort_t", "latency_ms@ov_t", "top1_val@ov_t",
                        "emulated_layers@ort_t", "emulated_layers@ov_t", "emulated_layers@model_t"}
    # the test profiles rate every format and list none as emulated
    assert got["emulated_layers@ort_t"] == 0
    assert got["latency_ms@ort_t"] > 0 and got["latency_ms@ov_t"] > 0
    want = accuracy(model, x, y)
    assert abs(got["top1_val@ort_t"] - want) <= 100 / 64
    # OpenVINO runs the QDQ pairs as its own int8 kernels (its own requantization): 0.01-0.03 apart
    # in the logits of this untrained network, whose median top-2 margin is ~0.02, so 2-3 of the
    # 64 near-ties flipped in the runs measured (with torch's NCHW and channels-last kernels alike)
    assert abs(got["top1_val@ov_t"] - want) <= 4 * 100 / 64


def test_emulated_layers_are_counted_per_target(tmp_path):
    space = SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Supernet(space)
    spec = space.sample(np.random.default_rng(3), 1)[0]
    model = static_subnet(net, spec, torch.Generator().manual_seed(0))
    cpu = HardwareProfile.from_yaml(REPO / "hardware_profiles" / "cpu_ort_epyc" / "profile.yaml")
    roof = _profile(tmp_path, "model_t", "roofline")
    x = np.zeros((4, 1, 28, 28), np.float32)
    got = measure_targets(model, [roof], SimpleNamespace(val_x=x, val_y=np.zeros(4, int)),
                          SimpleNamespace(val_images=None))
    assert got == {"emulated_layers@model_t": 0.0}  # roofline: everything native, nothing run
    want = sum(c.w_format in ("int4", "fp8_e4m3") or c.a_format in ("int4", "fp8_e4m3")
               for st in spec.stages for c in st) * 3  # expand, dw, project per mbconv layer
    got = measure_targets(model, [cpu], SimpleNamespace(val_x=x, val_y=np.zeros(4, int)),
                          SimpleNamespace(val_images=None), warmup=0, repeats=1)
    assert got["emulated_layers@cpu_ort_epyc"] == want > 0


def test_a_run_whose_profile_has_gone_keeps_the_others(tmp_path):
    found = run_profiles(("cpu_ort_epyc", "no_such_profile_here"), tmp_path)
    assert [p.name for p in found] == ["cpu_ort_epyc"]
