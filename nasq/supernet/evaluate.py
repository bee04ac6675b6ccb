"""Evaluate subnets with inherited weights: recalibrate batch norm and activation ranges, then
measure top-1. Importable with torch and numpy alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import EvaluateConfig, SpaceConfig
from nasq.supernet.network import Supernet


def calibration_images(x: np.ndarray, n_images: int, seed: int) -> np.ndarray:
    """The seeded, sorted choice of calibration images: Ray workers and the export use the same."""
    idx = np.random.default_rng(seed).choice(len(x), size=min(n_images, len(x)), replace=False)
    return np.ascontiguousarray(x[np.sort(idx)])


def calibration_batches(x: np.ndarray, n_images: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    return list(torch.from_numpy(calibration_images(x, n_images, seed)).split(batch_size))


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 (percent), on whichever device the model's weights are (a GPU too)."""
    return 100.0 * float(correct_mask(model, x, y, batch_size).sum()) / max(1, len(y))


@torch.no_grad()
def correct_mask(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Per-image correctness (bool, one per image): what :func:`accuracy` averages, kept so a
    benchmark can score any subset of the images, or two subnets image by image, from one pass."""
    model.eval()
    device = _device_of(model)
    out = np.empty(len(y), dtype=bool)
    for lo in range(0, len(y), batch_size):
        logits = model(torch.from_numpy(x[lo : lo + batch_size]).to(device))
        out[lo : lo + batch_size] = logits.argmax(1).cpu().numpy() == y[lo : lo + batch_size]
    return out


def _device_of(model: torch.nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def evaluate_spec(net: Supernet, spec: SubnetSpec, calib: list[torch.Tensor], x: np.ndarray, y: np.ndarray,
                  batch_size: int = 500) -> float:
    """Top-1 (percent) of ``spec`` after recalibration on ``calib``."""
    net.set_active(spec)
    net.calibrate(calib)
    return accuracy(net, x, y, batch_size)


def state_to_numpy(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


@dataclass(frozen=True)
class EvalPayload:
    """Everything a true evaluation needs, as plain data (what a Ray worker or Tune trial receives):
    the space config, the supernet's weights as numpy, the calibration images, the validation
    images and labels, and the evaluation batch size."""

    space_config: dict[str, Any]
    state: dict[str, np.ndarray]
    calib_x: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    batch_size: int

    @classmethod
    def build(cls, space: SearchSpace, net: torch.nn.Module, train_x: np.ndarray, val_x: np.ndarray,
              val_y: np.ndarray, ecfg: EvaluateConfig) -> EvalPayload:
        """The experiment's evaluation settings applied: ``calib_images`` seeded calibration
        images from the training split, the first ``val_images`` validation images (all if 0)."""
        n_val = ecfg.val_images or len(val_y)
        return cls(space.config.model_dump(mode="json"), state_to_numpy(net),
                   calibration_images(train_x, ecfg.calib_images, ecfg.seed), val_x[:n_val], val_y[:n_val],
                   ecfg.batch_size)


class SubnetEvaluator:
    """Evaluate specs on a supernet rebuilt from an :class:`EvalPayload`. Deterministic:
    calibration images were chosen by seed when the payload was built."""

    def __init__(self, payload: EvalPayload, threads: int | None = 1):
        if threads:
            torch.set_num_threads(threads)
        self.space = SearchSpace(SpaceConfig.model_validate(payload.space_config))
        self.net = Supernet(self.space)
        self.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in payload.state.items()})
        self.calib = list(torch.from_numpy(np.ascontiguousarray(payload.calib_x)).split(payload.batch_size))
        self.val_x, self.val_y, self.batch_size = payload.val_x, payload.val_y, payload.batch_size

    def __call__(self, specs: list[SubnetSpec]) -> list[float]:
        return [evaluate_spec(self.net, s, self.calib, self.val_x, self.val_y, self.batch_size) for s in specs]
