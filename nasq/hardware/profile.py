"""A hardware profile: the catalog entry ``hardware_profiles/<name>/profile.yaml`` (runtime, supported
formats, per-format peak rates, memory bandwidth, how it was measured)."""

from __future__ import annotations

from pathlib import Path

from nasq.errors import ConfigError
from nasq.formats import FORMATS
from nasq.space import SearchSpace
from nasq.specs import ProfileConfig, load_model, validate


class HardwareProfile:
    def __init__(self, config: ProfileConfig, source: str = "<memory>", content_hash: str = ""):
        self.config, self.source, self.hash = config, source, content_hash
        for field in ("peak_gops", "depthwise_peak_gops"):
            for fmt in getattr(config, field):
                if fmt not in FORMATS:
                    raise ConfigError(source, f"{field}.{fmt}", FORMATS.miss_message(fmt))

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

    def check_space(self, space: SearchSpace) -> None:
        missing = sorted(space.all_formats() - self.supported)
        if missing:
            raise ConfigError(self.source, "peak_gops",
                              f"formats {missing} of space '{space.name}' are not supported by profile "
                              f"'{self.name}' (supported: {sorted(self.supported)})")
