"""Frozen, versioned configuration schemas and the strict YAML loader for catalog and experiment files.

Every file a user writes is loaded here: ``yaml.safe_load``, then a pydantic model with
``extra="forbid"`` and ``frozen=True``. A failure becomes one :class:`ConfigError` line naming the
file, the field and the value. Cross references to registered kinds (formats, blocks, predictor
kinds) are checked one layer up, where the registries live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nasq.errors import ConfigError
from nasq.files import sha256_bytes

SCHEMA_VERSION = 1


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sorted_unique(name: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        raise ValueError(f"{name} needs at least one choice")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} choices must be unique, got {list(values)}")
    return values


def _positive_values(v: dict[str, float], what: str) -> dict[str, float]:
    for name, value in v.items():
        if value <= 0:
            raise ValueError(f"{what} of '{name}' must be > 0, got {value}")
    return v


# ---------------------------------------------------------------- search spaces
class InputSpec(Frozen):
    channels: int = Field(ge=1)
    resolution: int = Field(ge=4)
    num_classes: int = Field(ge=2)
    # elastic input resolution (mbconv, resnet): the image is resized to the chosen size
    resolution_choices: tuple[int, ...] = ()

    @field_validator("resolution_choices")
    @classmethod
    def _resolutions(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v:
            _sorted_unique("resolution_choices", v)
            if min(v) < 4:
                raise ValueError(f"choices must be >= 4, got {min(v)}")
        return tuple(sorted(v))


class StemSpec(Frozen):
    channels: int = Field(ge=1)
    kernel: int = Field(default=3, ge=1)  # vit: the patch size (kernel = stride = patch)
    stride: Literal[1, 2] = 1


Number = int | float


class StageSpec(Frozen):
    """One stage of blocks. Which per-layer fields a block kind searches is declared by the kind
    (``nasq.space.kinds``): mbconv kernel+expand, resnet kernel+expand (bottleneck ratio),
    vit heads+mlp_ratio. ``width`` may be one value or a list of choices (elastic width)."""

    block: str = "mbconv"
    width: int | tuple[int, ...]
    stride: Literal[1, 2] = 1
    depth: tuple[int, ...]
    kernel: tuple[int, ...] = ()
    expand: tuple[Number, ...] = ()
    heads: tuple[int, ...] = ()
    mlp_ratio: tuple[Number, ...] = ()
    se: bool = False  # mbconv: squeeze-and-excite in every block of the stage

    @field_validator("width")
    @classmethod
    def _width(cls, v: int | tuple[int, ...]) -> tuple[int, ...]:
        v = (v,) if isinstance(v, int) else tuple(v)
        _sorted_unique("width", v)
        if min(v) < 1:
            raise ValueError(f"choices must be >= 1, got {min(v)}")
        return tuple(sorted(v))

    @field_validator("depth", "heads")
    @classmethod
    def _positive(cls, v: tuple[int, ...], info: Any) -> tuple[int, ...]:
        if info.field_name == "heads" and not v:
            return v
        _sorted_unique(info.field_name, v)
        if min(v) < 1:
            raise ValueError(f"choices must be >= 1, got {min(v)}")
        return tuple(sorted(v))

    @field_validator("expand", "mlp_ratio")
    @classmethod
    def _ratios(cls, v: tuple[Number, ...], info: Any) -> tuple[Number, ...]:
        if not v:
            return v
        _sorted_unique(info.field_name, v)
        if min(v) <= 0:
            raise ValueError(f"choices must be > 0, got {min(v)}")
        return tuple(sorted(v))

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            return v
        _sorted_unique("kernel", v)
        for k in v:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"choices must be odd and positive, got {k}")
        return tuple(sorted(v))

    @property
    def max_width(self) -> int:
        return max(self.width)


class PrecisionMenu(Frozen):
    w_format: tuple[str, ...]
    a_format: tuple[str, ...]
    # relative sampling weight of a format during supernet training (default 1 for each)
    weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("w_format", "a_format")
    @classmethod
    def _unique(cls, v: tuple[str, ...], info: Any) -> tuple[str, ...]:
        return _sorted_unique(info.field_name, v)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        return _positive_values(v, "sampling weight")


Family = Literal["mbconv", "resnet", "vit", "sequence"]


class SpaceConfig(Frozen):
    name: str
    version: int = 1
    family: Family = "mbconv"
    description: str = ""
    input: InputSpec
    stem: StemSpec
    stages: tuple[StageSpec, ...] = Field(min_length=1)
    precision: PrecisionMenu


# ---------------------------------------------------------------- hardware profiles
class ProfileConfig(Frozen):
    name: str
    version: int = 1
    kind: Literal["roofline"] = "roofline"
    status: Literal["modelled", "measured"] = "modelled"
    description: str = ""
    peak_gops: dict[str, float] = Field(min_length=1)
    depthwise_efficiency: float = Field(default=1.0, gt=0, le=1)
    depthwise_peak_gops: dict[str, float] = Field(default_factory=dict)
    memory_gbs: float = Field(gt=0)
    layer_overhead_us: float = Field(default=0.0, ge=0)
    transition_ns_per_element: float = Field(default=0.0, ge=0)
    measured_on: str | None = None

    @field_validator("peak_gops", "depthwise_peak_gops")
    @classmethod
    def _positive_rates(cls, v: dict[str, float]) -> dict[str, float]:
        return _positive_values(v, "peak rate")


# ---------------------------------------------------------------- predictor recipes
class RecipeConfig(Frozen):
    name: str
    version: int = 1
    kind: str
    features: tuple[str, ...] = Field(min_length=1)
    params: dict[str, int | float | str | bool | None] = Field(default_factory=dict)
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    description: str = ""


# ---------------------------------------------------------------- experiment
Metric = Literal["top1", "latency_ms", "size_mb", "bops_g"]


class DataConfig(Frozen):
    name: Literal["fashion_mnist", "digits"] = "fashion_mnist"
    path: str | None = None
    fallback: Literal["digits", "none"] = "digits"
    train_limit: int | None = Field(default=None, ge=100)
    val_size: int = Field(default=5000, ge=50)
    test_limit: int | None = Field(default=None, ge=50)
    seed: int = 0


class TrainConfig(Frozen):
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=0.05, gt=0)
    weight_decay: float = Field(default=4e-5, ge=0)
    random_subnets: int = Field(default=2, ge=0)
    distill: bool = True
    threads: int | None = Field(default=None, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # adamw suits the transformer families (lr ~1e-3)
    format_sampling: Literal["uniform", "weighted"] = "uniform"  # weighted: the menu's weights
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16"] = "auto"  # auto: bf16 autocast on a GPU, off on CPU
    compile: Literal["auto", "off", "on"] = "auto"  # auto: torch.compile on a GPU only
    checkpoint_every: int = Field(default=200, ge=1)  # steps between checkpoints
    seed: int = 0


class EvaluateConfig(Frozen):
    num_subnets: int = Field(default=60, ge=8)
    calib_images: int = Field(default=2048, ge=64)
    val_images: int | None = Field(default=None, ge=50)
    batch_size: int = Field(default=500, ge=1)
    seed: int = 1


class ConstraintSpec(Frozen):
    metric: Metric
    max: float | None = None
    min: float | None = None
    profile: str | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        return self


Strategy = Literal["linas", "nsga2_true", "random", "optuna_nsga2", "optuna_tpe"]


class SearchConfig(Frozen):
    """``strategy``: linas (NSGA-II on predictors, refitted on each batch of true evaluations),
    or a baseline on true evaluations only: nsga2_true, random, optuna_nsga2, optuna_tpe.
    ``max_true_evals``: true evaluations the search may spend (the sampled training set is extra);
    ``batch_size``: true evaluations per iteration; ``uncertain_fraction``: share of each LINAS
    batch picked by predictor uncertainty (where the predictor has one); ``initial_evals``: random
    evaluations before LINAS first fits, when fewer are known; ``cache_dir``: where evaluation
    ledgers are kept, keyed by the supernet's identity (default ``<workdir>/cache``)."""

    strategy: Strategy = "linas"
    population: int = Field(default=64, ge=4)
    generations: int = Field(default=40, ge=1)
    max_true_evals: int = Field(default=24, ge=1)
    batch_size: int = Field(default=8, ge=1)
    uncertain_fraction: float = Field(default=0.25, ge=0, le=1)
    initial_evals: int = Field(default=16, ge=0)
    cache_dir: str | None = None
    seed: int = 0


class TrackingConfig(Frozen):
    uri: str | None = None
    experiment: str = "nasq"


class RayConfig(Frozen):
    address: str = "local"
    num_cpus: int | None = Field(default=None, ge=1)


class ExportConfig(Frozen):
    enabled: bool = True
    pick: Literal["knee", "max-top1", "min-latency"] = "knee"
    opset: int = Field(default=17, ge=13)


class ExperimentConfig(Frozen):
    # Keys once accepted and never acted on: refused by name, saying why and what to use instead.
    retired_keys: ClassVar[dict[tuple[str, ...], tuple[str, str]]] = {
        ("search", "algorithm"): ("not accepted (it was never used)",
                                  f"set search.strategy instead, one of {', '.join(get_args(Strategy))}"),
    }

    schema_version: int = SCHEMA_VERSION
    name: str = "demo"
    workdir: str = "runs/{name}"
    data: DataConfig = DataConfig()
    space: str = "mbconv_small"
    hardware: tuple[str, ...] = Field(default=("cpu_roofline",), min_length=1)
    predictor: str = "gbdt_onehot"
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    objectives: tuple[Metric, ...] = Field(default=("top1", "latency_ms", "size_mb"), min_length=2)
    constraints: tuple[ConstraintSpec, ...] = ()
    search: SearchConfig = SearchConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()
    export: ExportConfig = ExportConfig()

    @field_validator("hardware")
    @classmethod
    def _one_profile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) > 1:
            raise ValueError("one hardware profile per experiment for now; multi-target search is planned")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _sorted_unique("objectives", v)
        if "top1" not in v:
            raise ValueError(f"objectives must include 'top1', got {list(v)}")
        return v

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version, expected {SCHEMA_VERSION}, got {v}")
        return v


# ---------------------------------------------------------------- loading
M = TypeVar("M", bound=BaseModel)


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(err: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = format_loc(loc) or "(top level)"
    msg = str(e["msg"]).removeprefix("Value error, ")
    value = e.get("input")
    if e["type"] == "extra_forbidden":
        retired = getattr(model, "retired_keys", {}).get(loc)
        if retired:
            why, instead = retired
            return field, f"{why}, got {value!r}; {instead}"
        return field, "unknown key"
    if e["type"] == "missing":
        return field, "required field is missing"
    return field, f"{msg}, got {value!r}"


def validate(model: type[M], data: Any, source: str) -> M:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        field, msg = _first_error(e, model)
        raise ConfigError(source, field, msg) from e


def read_yaml(path: Path, source: str | None = None) -> tuple[Any, bytes]:
    source = source or str(path)
    if not path.is_file():
        raise ConfigError(source, "", "file not found")
    raw = path.read_bytes()
    try:
        return yaml.safe_load(raw), raw
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(parse)"
        raise ConfigError(source, where, f"not valid YAML: {getattr(e, 'problem', e)}") from e


def load_model(model: type[M], path: Path, source: str | None = None) -> tuple[M, str]:
    """Load and validate one YAML file; returns the model and the file's content hash."""
    data, raw = read_yaml(path, source)
    return validate(model, data, source or str(path)), sha256_bytes(raw)
