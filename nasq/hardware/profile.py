"""A hardware profile: the catalog entry ``hardware_profiles/<name>/profile.yaml`` (runtime, supported
formats, per-format peak rates, memory bandwidth, how it was measured)."""

from __future__ import annotations

import difflib
from pathlib import Path

from nasq.errors import ConfigError
from nasq.formats import FORMATS
from nasq.space import SearchSpace
from nasq.specs import ProfileConfig, load_model, validate

# The runtime backends a profile may name. nasq.profiling (layer 4) registers them by import path
# in ``BACKENDS``; this layer may not import it, so the names are kept here as data and a contract
# test (tests/unit/test_hardware.py) checks the two agree.
KNOWN_BACKENDS = ("onnxruntime", "openvino", "torch-cuda")
ANALYTIC_BACKEND = "roofline"  # a profile computed from its rates alone, with no runtime behind it


def backend_names() -> tuple[str, ...]:
    return (*KNOWN_BACKENDS, ANALYTIC_BACKEND)


class HardwareProfile:
    def __init__(self, config: ProfileConfig, source: str = "<memory>", content_hash: str = ""):
        self.config, self.source, self.hash = config, source, content_hash
        self._check_backend()
        for field in ("peak_gops", "depthwise_peak_gops", "native_formats", "emulated_formats"):
            for i, fmt in enumerate(getattr(config, field)):
                where = f"{field}.{fmt}" if isinstance(getattr(config, field), dict) else f"{field}[{i}]"
                if fmt not in FORMATS:
                    raise ConfigError(source, where, FORMATS.miss_message(fmt))
                if field.endswith("_formats") and fmt not in config.peak_gops:
                    raise ConfigError(source, where, f"format {fmt!r} has no rate in peak_gops (add one, "
                                      f"or drop it; peak_gops: {', '.join(sorted(config.peak_gops))})")
        both = sorted(set(config.native_formats) & set(config.emulated_formats))
        if both:
            raise ConfigError(source, "emulated_formats", f"format {both[0]!r} is also in native_formats; "
                              "a format is either native or emulated")

    def _check_backend(self) -> None:
        name = self.config.backend
        if name not in backend_names():
            close = difflib.get_close_matches(name, backend_names(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(self.source, "backend", f"unknown backend {name!r} (known: "
                              f"{', '.join(backend_names())}){hint}")

    @classmethod
    def from_yaml(cls, path: str | Path, source: str | None = None) -> HardwareProfile:
        config, digest = load_model(ProfileConfig, Path(path), source)
        return cls(config, source or str(path), digest)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> HardwareProfile:
        return cls(validate(ProfileConfig, data, source), source)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def supported(self) -> set[str]:
        return set(self.config.peak_gops)

    @property
    def native(self) -> set[str]:
        """Formats the profile's runtime runs with its own kernels."""
        return set(self.config.native)

    @property
    def emulated(self) -> set[str]:
        """Formats the profile's runtime only emulates (supported, not native)."""
        return set(self.config.emulated)

    @property
    def max_batch(self) -> int:
        return max(self.config.batch_sizes)

    def check_space(self, space: SearchSpace) -> None:
        missing = sorted(space.all_formats() - self.supported)
        if missing:
            raise ConfigError(self.source, "peak_gops",
                              f"formats {missing} of space '{space.name}' are not supported by profile "
                              f"'{self.name}' (supported: {sorted(self.supported)})")

    def emulated_in(self, space: SearchSpace) -> list[str]:
        """The formats of ``space``'s precision menu this profile only emulates, sorted."""
        return sorted(space.all_formats() & self.emulated)
