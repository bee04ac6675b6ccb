"""Frozen, versioned configuration schemas and the strict YAML loader for catalog and experiment files.

Every file a user writes is loaded here: a strict ``yaml.SafeLoader`` (duplicate keys, deep nesting,
alias bombs, oversized and non-UTF-8 files refused), then a pydantic model with ``extra="forbid"``,
``frozen=True`` and no NaN or infinity. A failure becomes one :class:`ConfigError` line naming the
file, the field and the value (cut to :data:`SHOW_CHARS` characters). Cross references to registered
kinds (formats, blocks, predictor kinds) are checked one layer up, where the registries live.
"""

from __future__ import annotations

import re
import reprlib
import string
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nasq.errors import ConfigError
from nasq.files import sha256_bytes

SCHEMA_VERSION = 1

# ---------------------------------------------------------------- bounds
# Every size a user file (or command line) can set has an upper bound. nasq trains one supernet on
# one machine - a CPU box or one GPU (the largest we run on: ~140 GiB of GPU memory, 128 GiB of RAM,
# 16 cores) - so the bounds sit far above anything such a run uses (the shipped spaces: widths <= 128,
# 4 layers per stage, 28x28 images; the demo: population 64, 48 sampled subnets) and low enough that
# no single value makes nasq allocate, loop or print beyond that machine before it fails with a clear
# line. Where a product of sizes is what matters, it is bounded too: the largest subnet of a space
# may hold at most MAX_SUPERNET_PARAMS weights (nasq.space checks it) - 8 GiB in fp32, ~32 GiB with
# gradients and optimizer state; a population is scored as a (population x genes) int64 matrix,
# at most 10,000 x 12,288 genes (32 stages x 64 layers x 6 genes) = ~1 GiB.
MAX_FILE_BYTES = 1 << 20  # a catalog or experiment file; the shipped ones are < 2 KiB
MAX_NESTING = 64  # YAML nesting levels (the shipped files use 3), also through aliases
MAX_NODES = 100_000  # YAML values after expanding aliases: a 1 MiB file without aliases has fewer
MAX_INT_CHARS = 40  # digits of a YAML integer (2**128 has 39): no 4,300-digit conversions
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"  # names become folder, file and MLflow names
MAX_TEXT_CHARS = 4096  # any other string (description, URI): a page, not megabytes
MAX_PATH_CHARS = 1024  # a path in a file (workdir, data.path, cache_dir, a catalog file)
MAX_PATH_PART_BYTES = 255  # one path component (NAME_MAX of Linux and macOS file systems)
MAX_CHOICES = 64  # entries of one list: a gene's choices, a format menu, features, params
MAX_STAGES = 32
MAX_DEPTH = 64  # layers per stage (ResNet-152's deepest stage has 36)
MAX_CHANNELS = 8192  # input, stem and stage widths
MAX_KERNEL = 63  # conv kernels; for a ViT stem the patch size
MAX_RATIO = 64.0  # expand and MLP ratios
MAX_HEADS = 1024
MAX_RESOLUTION = 1024  # input images up to 1024x1024 (ImageNet models use 224)
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_SUPERNET_PARAMS = 1 << 31
MAX_IMAGES = 10_000_000  # data limits, validation and calibration images (ImageNet-1k: 1.28 M)
MAX_BATCH = 65_536
MAX_EPOCHS = 10_000.0
MAX_EVALS = 100_000  # true evaluations (sampled subnets, a search's budget): each takes seconds
MAX_POPULATION = 10_000
MAX_GENERATIONS = 100_000  # predictor-scored generations: milliseconds each
MAX_SEED = 2**31 - 1  # leaves seed + offset < 2**32, what numpy's legacy and scikit-learn seeds take
MAX_THREADS = 4096  # threads, Ray CPUs
MAX_STEPS = 1_000_000_000  # training steps between checkpoints
MAX_VERSION = 1_000_000
MAX_RATE = 1e12  # GOPS or GB/s (an H200: ~4e6 GOPS fp8, 4.8e3 GB/s)
MAX_TIME = 1e9  # microseconds per layer, nanoseconds per element
MAX_PARAM_INT = 1_000_000  # an integer hyperparameter of a predictor recipe (n_estimators, members)
MAX_LR = 10.0
SHOW_CHARS = 80  # an echoed value in an error message is cut to this many characters


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_TEXT_CHARS)


# ---------------------------------------------------------------- showing values
class _ShortRepr(reprlib.Repr):
    """``reprlib`` bounded at every level; huge integers are described, never converted (the
    4,300-digit limit of int -> str raises ValueError)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 6, 6, 4, 4
        self.maxstring, self.maxother, self.maxlong = SHOW_CHARS, SHOW_CHARS, 40

    def repr_int(self, x: int, level: int) -> str:
        if abs(x) >= 10**40:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()


def show(value: Any, limit: int = SHOW_CHARS) -> str:
    """``repr(value)`` on one line, at most ``limit`` characters: what error messages echo."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - a value's own __repr__ may fail; the message must not
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: Any, limit: int = 300) -> str:
    """A message (ours, a library's) on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- names and paths
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = "a letter or digit, then up to 99 letters, digits, '.', '_' or '-'"


def check_name(value: str) -> str:
    """A name that becomes a folder, file or MLflow name: :data:`NAME_PATTERN` (ValueError if not)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"must be a name ({NAME_RULE}), got {show(value)}")
    return value


def check_path_text(value: str) -> str:
    """A path as text: not empty, no control characters, at most MAX_PATH_CHARS characters and
    MAX_PATH_PART_BYTES bytes per component (ValueError if not). Says nothing about where it points."""
    if not value or not value.strip():
        raise ValueError(f"must not be empty, got {show(value)}")
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"must be at most {MAX_PATH_CHARS} characters, got {len(value):,}: {show(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"must not contain control characters, got {show(value)}")
    for part in PurePath(value).parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_PART_BYTES:
            raise ValueError(f"each folder or file name must be at most {MAX_PATH_PART_BYTES} bytes, got {show(part)}")
    return value


def check_confined_path(value: str) -> str:
    """A folder nasq writes into: :func:`check_path_text`, no ``..`` component, and a relative
    path must name a folder below the current directory (not ``.`` itself). An absolute path is
    the file author's explicit choice of root and is taken as written."""
    check_path_text(value)
    path = PurePath(value)
    if ".." in path.parts:
        raise ValueError(f"must not contain '..' (it must stay inside its root), got {show(value)}")
    if not [p for p in path.parts if p not in (".", path.anchor)]:
        raise ValueError(f"must name a folder below the current directory (or below '/'), got {show(value)}")
    return value


WORKDIR_FIELDS = ("name",)


def check_workdir_template(template: str) -> str:
    """``workdir``: plain text and ``{name}`` only (``{{``/``}}`` for braces); no attribute, index,
    conversion or format spec - the experiment file is data, not a format program."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"not a valid template ({e}; write {{{{ and }}}} for braces), got {show(template)}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in WORKDIR_FIELDS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"only {{name}} may be filled in (no attributes, indices, conversions or format "
                             f"specs), got {show(shown)}")
    return template


def workdir_path(template: str, name: str) -> Path:
    """The workdir ``template`` filled in with the experiment ``name``, checked by
    :func:`check_confined_path` (ValueError if it does not pass)."""
    check_workdir_template(template)
    check_name(name)
    text = template.format(name=name)
    check_confined_path(text)
    return Path(text)


def _catalog_ref(value: str) -> str:
    # A catalog entry by name (search_spaces/<name>.yaml, ...) or a file by path (a '/' or a .yaml suffix).
    if "/" in value or value.endswith(".yaml"):
        return check_path_text(value)
    return check_name(value)


Name = Annotated[str, AfterValidator(check_name)]
CatalogRef = Annotated[str, AfterValidator(_catalog_ref)]
PathText = Annotated[str, AfterValidator(check_path_text)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Version = Annotated[int, Field(ge=1, le=MAX_VERSION)]


def _sorted_unique(name: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        raise ValueError(f"{name} needs at least one choice")
    if len(values) > MAX_CHOICES:
        raise ValueError(f"{name} has {len(values)} choices, at most {MAX_CHOICES} allowed")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} choices must be unique, got {show(list(values))}")
    return values


def _within(name: str, values: tuple[Any, ...], low: float, high: float, strict_low: bool = False) -> None:
    for v in values:
        if (v <= low if strict_low else v < low) or v > high:
            bound = f"> {low:g}" if strict_low else f">= {low:g}"
            raise ValueError(f"{name} choices must be {bound} and <= {high:g}, got {show(v)}")


def _positive_values(v: dict[str, float], what: str, high: float = MAX_RATE) -> dict[str, float]:
    if len(v) > MAX_CHOICES:
        raise ValueError(f"at most {MAX_CHOICES} entries, got {len(v)}")
    for name, value in v.items():
        if not 0 < value <= high:
            raise ValueError(f"{what} of {show(name)} must be > 0 and <= {high:g}, got {show(value)}")
    return v


# ---------------------------------------------------------------- search spaces
MAX_LENGTH = 1 << 20  # time steps of one series (a day of 1 Hz samples is 86,400)
MAX_FEATURES = 1 << 20  # columns of one table row
INPUT_SIZES = ("resolution", "length", "features")


class InputSpec(Frozen):
    """What the network reads, one of three shapes (:attr:`shape`): an image of ``channels`` x
    ``resolution`` x ``resolution`` (mbconv, resnet, vit; sequence reads its rows as tokens), a
    series of ``channels`` x ``length`` time steps (sequence) or a table row of ``features``
    (mlp). Exactly one of ``resolution``, ``length`` and ``features`` is given; which one a
    family takes is checked with the family (``nasq.space.kinds.check_family``)."""

    channels: int = Field(default=1, ge=1, le=MAX_CHANNELS)
    resolution: int | None = Field(default=None, ge=4, le=MAX_RESOLUTION)
    length: int | None = Field(default=None, ge=1, le=MAX_LENGTH)
    features: int | None = Field(default=None, ge=1, le=MAX_FEATURES)
    num_classes: int = Field(ge=2, le=MAX_CLASSES)
    # elastic input resolution (mbconv, resnet): the image is resized to the chosen size
    resolution_choices: tuple[int, ...] = ()

    @field_validator("resolution_choices")
    @classmethod
    def _resolutions(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v:
            _sorted_unique("resolution_choices", v)
            if min(v) < 4:
                raise ValueError(f"choices must be >= 4, got {min(v)}")
            _within("resolution_choices", v, 4, MAX_RESOLUTION)
        return tuple(sorted(v))

    @model_validator(mode="after")
    def _one_size(self) -> InputSpec:
        given = [name for name in INPUT_SIZES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give one of resolution (an image), length (a series) or features (a table row), "
                             f"got {show(given)}")
        if self.features is not None and self.channels != 1:  # 1: the default (and a dumped config)
            raise ValueError(f"a table row has features, not channels, got channels: {self.channels}")
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's shape: (C, H, W) for an image, (C, T) for a series, (F,) for a table row."""
        if self.features is not None:
            return (self.features,)
        if self.length is not None:
            return (self.channels, self.length)
        return (self.channels, self.resolution, self.resolution)


class StemSpec(Frozen):
    channels: int = Field(ge=1, le=MAX_CHANNELS)
    kernel: int = Field(default=3, ge=1, le=MAX_KERNEL + 1)  # vit: the patch size (kernel = stride = patch); sequence: time steps per token
    stride: Literal[1, 2] = 1
    # vit only: 3x3 stride-2 conv + batch norm + ReLU layers before the patch projection (a
    # convolutional stem, Xiao et al. 2021), the last with ``channels`` outputs, each before it half
    # as many; the projection then reads patches of kernel / 2**convs over their output
    convs: int = Field(default=0, ge=0, le=3)


Number = int | float


class StageSpec(Frozen):
    """One stage of blocks. Which per-layer fields a block kind searches is declared by the kind
    (``nasq.space.kinds``): mbconv kernel+expand, resnet kernel+expand (bottleneck ratio),
    vit heads+mlp_ratio. ``width`` may be one value or a list of choices (elastic width)."""

    block: Name = "mbconv"
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
        _within("width", v, 1, MAX_CHANNELS)
        return tuple(sorted(v))

    @field_validator("depth", "heads")
    @classmethod
    def _positive(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if info.field_name == "heads" and not v:
            return v
        _sorted_unique(info.field_name, v)
        if min(v) < 1:
            raise ValueError(f"choices must be >= 1, got {min(v)}")
        _within(info.field_name, v, 1, MAX_DEPTH if info.field_name == "depth" else MAX_HEADS)
        return tuple(sorted(v))

    @field_validator("expand", "mlp_ratio")
    @classmethod
    def _ratios(cls, v: tuple[Number, ...], info: ValidationInfo) -> tuple[Number, ...]:
        if not v:
            return v
        _sorted_unique(info.field_name, v)
        if min(v) <= 0:
            raise ValueError(f"choices must be > 0, got {min(v)}")
        _within(info.field_name, v, 0, MAX_RATIO, strict_low=True)
        return tuple(sorted(v))

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            return v
        _sorted_unique("kernel", v)
        for k in v:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"choices must be odd and positive, got {show(k)}")
        _within("kernel", v, 1, MAX_KERNEL)
        return tuple(sorted(v))

    @property
    def max_width(self) -> int:
        return max(self.width)


class PrecisionMenu(Frozen):
    w_format: tuple[Name, ...]
    a_format: tuple[Name, ...]
    # relative sampling weight of a format during supernet training (default 1 for each)
    weights: dict[Name, float] = Field(default_factory=dict)

    @field_validator("w_format", "a_format")
    @classmethod
    def _unique(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _sorted_unique(info.field_name, v)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        return _positive_values(v, "sampling weight", high=1e6)


Family = Literal["mbconv", "resnet", "vit", "sequence", "mlp"]


class SpaceConfig(Frozen):
    name: Name
    version: Version = 1
    family: Family = "mbconv"
    description: str = ""
    input: InputSpec
    stem: StemSpec
    stages: tuple[StageSpec, ...] = Field(min_length=1, max_length=MAX_STAGES)
    precision: PrecisionMenu

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape, what the data must hold: (C, H, W) for an image, (C, T) for a
        series, (F,) for a table row (see :class:`InputSpec`)."""
        return self.input.shape


# A foreign problem's genes: no network, only named categorical choices (nasq.space.generic).
GeneValue = Annotated[StrictStr | StrictBool | StrictInt | StrictFloat, Field(union_mode="left_to_right")]
MAX_GENERIC_GENES = 4096


class GenericGene(Frozen):
    name: Name
    choices: tuple[GeneValue, ...] = Field(min_length=1, max_length=MAX_CHOICES)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        seen = [(type(c).__name__, c) for c in v]
        if len(set(seen)) != len(seen):
            raise ValueError(f"choices must be distinct, got {show(list(v))}")
        return v


class GenericSpaceConfig(Frozen):
    """``family: generic``: named genes with listed choices and no network."""

    name: Name
    version: Version = 1
    family: Literal["generic"]
    description: str = ""
    genes: tuple[GenericGene, ...] = Field(min_length=1, max_length=MAX_GENERIC_GENES)

    @field_validator("genes")
    @classmethod
    def _unique_names(cls, v: tuple[GenericGene, ...]) -> tuple[GenericGene, ...]:
        names = [g.name for g in v]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"gene names must be unique, {show(dup)} appears {names.count(dup)} times")
        return v


# ---------------------------------------------------------------- hardware profiles
class ProfileConfig(Frozen):
    """``backend``: the runtime the profile describes - a registered latency backend
    (``onnxruntime``, ``openvino``, ``torch-cuda``) or ``roofline`` for an analytic-only profile
    (default, what profiles written before the field meant); checked against the registry one layer
    up (``nasq.hardware.profile``). ``threads``: threads the runtime was timed with;
    ``batch_sizes``: the batch sizes the profile speaks for. ``native_formats`` /
    ``emulated_formats``: formats the runtime runs with its own kernels / only emulates (as float
    arithmetic); each must be a registered format of ``peak_gops``, none in both (checked with the
    registry, in ``nasq.hardware.profile``). When both are empty (older
    profiles) every format of ``peak_gops`` counts as native; when either is given, a format of
    ``peak_gops`` listed in neither counts as emulated - only what a profile claims is native is."""

    name: Name
    version: Version = 1
    kind: Literal["roofline"] = "roofline"
    status: Literal["modelled", "measured"] = "modelled"
    backend: Name = "roofline"
    threads: int = Field(default=1, ge=1, le=MAX_THREADS)
    batch_sizes: tuple[int, ...] = (1,)
    native_formats: tuple[Name, ...] = Field(default=(), max_length=MAX_CHOICES)
    emulated_formats: tuple[Name, ...] = Field(default=(), max_length=MAX_CHOICES)
    description: str = ""
    peak_gops: dict[Name, float] = Field(min_length=1)
    depthwise_efficiency: float = Field(default=1.0, gt=0, le=1)
    depthwise_peak_gops: dict[Name, float] = Field(default_factory=dict)
    memory_gbs: float = Field(gt=0, le=MAX_RATE)
    layer_overhead_us: float = Field(default=0.0, ge=0, le=MAX_TIME)
    transition_ns_per_element: float = Field(default=0.0, ge=0, le=MAX_TIME)
    measured_on: str | None = None

    @field_validator("peak_gops", "depthwise_peak_gops")
    @classmethod
    def _positive_rates(cls, v: dict[str, float]) -> dict[str, float]:
        return _positive_values(v, "peak rate")

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        _sorted_unique("batch_sizes", v)
        _within("batch_sizes", v, 1, MAX_BATCH)
        return tuple(sorted(v))

    @field_validator("native_formats", "emulated_formats")
    @classmethod
    def _unique_formats(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"formats must be unique, got {show(list(v))}")
        return v

    @property
    def native(self) -> frozenset[str]:
        """Formats the runtime runs natively (every format of ``peak_gops`` when neither list is given)."""
        if not self.native_formats and not self.emulated_formats:
            return frozenset(self.peak_gops)
        return frozenset(self.native_formats)

    @property
    def emulated(self) -> frozenset[str]:
        """Formats of ``peak_gops`` the runtime only emulates (see the class docstring)."""
        return frozenset(self.peak_gops) - self.native


# ---------------------------------------------------------------- predictor recipes
ParamValue = int | float | str | bool | None


def _check_params(v: dict[str, ParamValue]) -> dict[str, ParamValue]:
    if len(v) > MAX_CHOICES:
        raise ValueError(f"at most {MAX_CHOICES} params, got {len(v)}")
    for key, value in v.items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_PARAM_INT:
            raise ValueError(f"{show(key)}: integers must lie within +-{MAX_PARAM_INT:,}, got {show(value)}")
        if isinstance(value, str) and len(value) > 256:
            raise ValueError(f"{show(key)}: at most 256 characters, got {show(value)}")
    return v


class RecipeConfig(Frozen):
    name: Name
    version: Version = 1
    kind: Name
    features: tuple[Name, ...] = Field(min_length=1, max_length=MAX_CHOICES)
    params: Annotated[dict[str, ParamValue], AfterValidator(_check_params)] = Field(default_factory=dict)
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    description: str = ""


# ---------------------------------------------------------------- experiment
# Metrics an objective or constraint may name. A per-target metric also takes the form
# ``<metric>@<profile>`` (``latency_ms@cpu_ort_epyc``): its value on that hardware profile; plain,
# it is the first profile's. ``throughput_ips``: images per second (see nasq.hardware.cost).
METRICS = ("top1", "latency_ms", "throughput_ips", "size_mb", "bops_g")
PER_TARGET_METRICS = ("latency_ms", "throughput_ips")
# each metric's goal: what an experiment's ``{name, goal}`` objective must agree with
METRIC_GOALS = {"top1": "max", "latency_ms": "min", "throughput_ips": "max", "size_mb": "min", "bops_g": "min"}


def check_metric(value: str) -> str:
    """``value`` if it is a metric of :data:`METRICS`, or ``<m>@<profile>`` with ``m`` one of
    :data:`PER_TARGET_METRICS` and a profile name (ValueError if not). Whether the profile is one
    of the experiment's is checked when the experiment loads."""
    base, at, profile = str(value).partition("@")
    if not at:
        if base not in METRICS:
            raise ValueError(f"unknown metric (known: {', '.join(METRICS)}, or "
                             f"{'/'.join(PER_TARGET_METRICS)}@<profile>), got {show(value)}")
        return value
    if base not in PER_TARGET_METRICS:
        raise ValueError(f"only {', '.join(PER_TARGET_METRICS)} take '@<profile>', got {show(value)}")
    check_name(profile)
    return value


def metric_base(metric: str) -> str:
    """``latency_ms@cpu_x`` -> ``latency_ms``; a plain metric is its own base."""
    return metric.partition("@")[0]


Metric = Annotated[str, AfterValidator(check_metric)]


class DataConfig(Frozen):
    """``source``: a registered data-source kind (``nasq.data.SOURCES``: idx, npz, image_folder,
    table, series and the presets fashion_mnist, digits); the name is checked, and the source's own
    fields against its files, by ``nasq.data.check_available``. The old key ``name`` still works."""

    source: Name = "fashion_mnist"
    path: PathText | None = None
    fallback: Literal["digits", "none"] = "digits"  # fashion_mnist only: what to use without its files
    label: str = Field(default="label", min_length=1, max_length=256)  # table: the label column
    length: int | None = Field(default=None, ge=1, le=MAX_LENGTH)  # series: pad/cut to it
    train_limit: int | None = Field(default=None, ge=100, le=MAX_IMAGES)
    val_size: int = Field(default=5000, ge=50, le=MAX_IMAGES)
    test_limit: int | None = Field(default=None, ge=50, le=MAX_IMAGES)
    seed: Seed = 0

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, v: Any) -> Any:
        if isinstance(v, dict) and "name" in v:  # schema 1 files say `data: {name: digits}`
            if "source" in v:
                raise ValueError("give `source` or its old name `name`, not both")
            v = {("source" if k == "name" else k): val for k, val in v.items()}
        return v

    @property
    def name(self) -> str:
        """The old name of ``source``, kept for code and files written before sources were kinds."""
        return self.source


# Named training recipes: what ``TrainConfig.recipe`` fills where the file leaves a field unset.
# ``warmup_fraction`` becomes ``warmup_epochs`` = that share of the resolved ``epochs``.
TRAIN_RECIPES: dict[str, dict[str, Any]] = {
    "custom": {},
    "demo": {"label_smoothing": 0.1, "warmup_fraction": 0.05},
    # no augmentation: crop-and-flip lost 4-6 points at 1 and 3 epochs (docs/benchmarks.md, supernet-recipe)
    "full": {"epochs": 10.0, "label_smoothing": 0.1, "warmup_fraction": 0.05},
}


class TrainConfig(Frozen):
    """Supernet training. ``recipe`` names a preset that fills the fields the file does not set
    (fields given explicitly win): ``custom`` (nothing: the plain defaults), ``demo`` (the demo's
    budget with the cheap wins: label smoothing 0.1, linear warm-up over the first 5 % of the
    epochs), ``full`` (the benchmark's full-length run: 10 epochs, label smoothing 0.1, 5 %
    warm-up; ``augment`` stays off, as it lost points at the budgets measured). No preset picks the optimizer: the transformer families
    (vit, sequence) want ``optimizer: adamw, lr: 0.001, weight_decay: 0.05`` and, at budgets of a
    few epochs, ``distill: false`` (in-place distillation cost them several points; see
    docs/benchmarks.md, supernet-full5-seq).
    ``warmup_epochs``: linear warm-up from ``lr / warm-up steps`` to ``lr``, then the cosine over
    the rest; ``label_smoothing``: on the hard-label losses (the largest subnet's, and every
    subnet's with ``distill: false``); ``augment``: for image inputs only, a random crop of the
    edge-padded image and a horizontal flip, drawn per step from ``seed`` (ignored for series and
    tables); ``distill_temperature``: T of the in-place distillation (soft targets and student at
    T, loss scaled by T^2); ``activation_ranges``: ``learned`` (int2-int7 activations learn their
    clipping range, LSQ; see docs/architecture.md) or ``max`` (each batch's maximum);
    ``shrink`` with ``shrink_epochs``: progressive shrinking (Once-for-All), e.g. ``[[kernel],
    [depth], [expand, width]]`` over 3 epochs: the first epoch varies only the kernel, the second
    kernel and depth, the third adds expand and width, every gene field (formats, resolution too)
    varies after; the fields not yet elastic take the largest subnet's choice, also in the sandwich's
    smallest subnet."""

    recipe: Literal["custom", "demo", "full"] = "custom"
    epochs: float = Field(default=1.0, gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(default=128, ge=2, le=MAX_BATCH)
    lr: float = Field(default=0.05, gt=0, le=MAX_LR)
    weight_decay: float = Field(default=4e-5, ge=0, le=1)
    random_subnets: int = Field(default=2, ge=0, le=MAX_CHOICES)
    distill: bool = True
    threads: int | None = Field(default=None, ge=1, le=MAX_THREADS)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # adamw suits the transformer families (lr ~1e-3)
    format_sampling: Literal["uniform", "weighted"] = "uniform"  # weighted: the menu's weights
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16"] = "auto"  # auto: bf16 autocast on a GPU, off on CPU
    compile: Literal["auto", "off", "on"] = "auto"  # auto: torch.compile on a GPU only
    checkpoint_every: int = Field(default=200, ge=1, le=MAX_STEPS)  # steps between checkpoints
    # >1: data-parallel on Ray Train (nasq.cluster.train), the batch split across the workers
    workers: int = Field(default=1, ge=1, le=MAX_THREADS)
    seed: Seed = 0
    warmup_epochs: float = Field(default=0.0, ge=0, le=MAX_EPOCHS)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    augment: bool = False
    distill_temperature: float = Field(default=1.0, gt=0, le=100)
    # int2-int7 activations: ``learned`` clipping ranges (LSQ), or each batch's ``max`` (as before)
    activation_ranges: Literal["learned", "max"] = "learned"
    # progressive shrinking (OFA): over the first shrink_epochs, in len(shrink) equal phases, phase
    # k varies only the gene fields of shrink[0..k] (the largest's choice elsewhere); then all
    shrink: list[list[Name]] = Field(default_factory=list, max_length=MAX_CHOICES)
    shrink_epochs: float = Field(default=0.0, ge=0, le=MAX_EPOCHS)

    @model_validator(mode="before")
    @classmethod
    def _fill_recipe(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        name = v.get("recipe", "custom")
        preset = TRAIN_RECIPES.get(name) if isinstance(name, str) else None
        if not preset:  # custom, or a bad value that the field's own check reports
            return v
        out = {k: val for k, val in preset.items() if k != "warmup_fraction"} | v
        if "warmup_epochs" not in v and "warmup_fraction" in preset:
            epochs = out.get("epochs", 1.0)
            if isinstance(epochs, (int, float)) and not isinstance(epochs, bool):
                out["warmup_epochs"] = preset["warmup_fraction"] * epochs
        return out

    @model_validator(mode="after")
    def _warmup_within(self) -> TrainConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be below epochs ({self.epochs:g}), got {self.warmup_epochs:g}")
        if bool(self.shrink) != (self.shrink_epochs > 0):
            raise ValueError("shrink (the fields made elastic phase by phase) and shrink_epochs (> 0) go together, "
                             f"got shrink {self.shrink} and shrink_epochs {self.shrink_epochs:g}")
        if self.shrink_epochs >= self.epochs:
            raise ValueError(f"shrink_epochs must be below epochs ({self.epochs:g}), got {self.shrink_epochs:g}")
        return self


class EvaluateConfig(Frozen):
    num_subnets: int = Field(default=60, ge=8, le=MAX_EVALS)
    # 512: 2,048 calibration images cost ~4x the calibration time for no clear gain; the whole
    # validation split (val_images None) removes the noise that dominates (benchmarks/eval_noise.py)
    calib_images: int = Field(default=512, ge=64, le=MAX_IMAGES)
    val_images: int | None = Field(default=None, ge=50, le=MAX_IMAGES)
    batch_size: int = Field(default=500, ge=1, le=MAX_BATCH)
    seed: Seed = 1


class ConstraintSpec(Frozen):
    metric: Metric
    max: float | None = None
    min: float | None = None
    profile: Name | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintSpec:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        _, at, named = self.metric.partition("@")
        if at and self.profile is not None and named != self.profile:
            raise ValueError(f"metric {self.metric!r} names profile {named!r} but profile is "
                             f"{self.profile!r}; give one of them, got {show(self.profile)}")
        return self

    @property
    def key(self) -> str:
        """The metric the constraint bounds: ``profile: p`` on a per-target metric is ``metric@p``
        (on size_mb, bops_g or top1, which do not depend on the profile, it changes nothing)."""
        if self.profile is None or "@" in self.metric or self.metric not in PER_TARGET_METRICS:
            return self.metric
        return f"{self.metric}@{self.profile}"


Strategy = Literal["linas", "nsga2_true", "random", "optuna_nsga2", "optuna_tpe", "ilp", "sensitivity_seeded"]


class SearchConfig(Frozen):
    """``strategy``: linas (NSGA-II on predictors, refitted on each batch of true evaluations),
    or a baseline on true evaluations only: nsga2_true, random, optuna_nsga2, optuna_tpe; or a
    quantization-literature strategy: ilp (per-layer formats chosen by a mixed-integer program
    (scipy milp) from the per-layer sensitivity table, or the predictor without one, swept over
    budgets), sensitivity_seeded (LINAS whose inner NSGA-II starts from ILP allocations).
    ``max_true_evals``: true evaluations the search may spend (the sampled training set is extra);
    ``batch_size``: true evaluations per iteration; ``uncertain_fraction``: share of each LINAS
    batch picked by predictor uncertainty (where the predictor has one); ``initial_evals``: random
    evaluations before LINAS first fits, when fewer are known; ``cache_dir``: where evaluation
    ledgers are kept, keyed by the supernet's identity (default ``<workdir>/cache``; like the
    workdir, a relative path without ``..`` below the current directory, or an absolute path);
    ``seed``: 0 to 2**31 - 1; ``engine``: the NSGA-II loop of predictor-scored searches, "array"
    (nasq/search/engine.py, the population as arrays), "pymoo" (pymoo's ``minimize``) or "auto"
    (array when the search is scored on genome matrices, else pymoo)."""

    strategy: Strategy = "linas"
    population: int = Field(default=64, ge=4, le=MAX_POPULATION)
    generations: int = Field(default=40, ge=1, le=MAX_GENERATIONS)
    max_true_evals: int = Field(default=24, ge=1, le=MAX_EVALS)
    batch_size: int = Field(default=8, ge=1, le=MAX_EVALS)
    uncertain_fraction: float = Field(default=0.25, ge=0, le=1)
    initial_evals: int = Field(default=16, ge=0, le=MAX_EVALS)
    cache_dir: str | None = None
    seed: Seed = 0
    # which NSGA-II loop runs (issue 17: pymoo's object-per-individual population caps the loop)
    engine: Literal["auto", "array", "pymoo"] = "auto"

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir(cls, v: str | None) -> str | None:
        return None if v is None else check_confined_path(v)


class TrackingConfig(Frozen):
    uri: str | None = None
    experiment: Name = "nasq"


class RayConfig(Frozen):
    """``address``: ``local`` (an embedded Ray), ``none`` (in this process), ``auto`` or a cluster's
    address; inside a Ray job (``nasq submit``) the job's own cluster is used whatever it says.
    ``max_in_flight``: evaluation tasks pending at once (backpressure; default twice the cluster's
    CPUs); ``chunk``: subnets per evaluation task (default about 8 tasks per CPU per batch, 1..16;
    see nasq.cluster.tasks)."""

    address: str = "local"
    num_cpus: int | None = Field(default=None, ge=1, le=MAX_THREADS)
    max_in_flight: int | None = Field(default=None, ge=1, le=100_000)
    chunk: int | None = Field(default=None, ge=1, le=1_000)


class ExportConfig(Frozen):
    enabled: bool = True
    pick: Literal["knee", "max-top1", "min-latency"] = "knee"
    # The written model's opset: 21, where INT4 storage and DequantizeLinear's block_size exist
    # (nasq traces at the exporter's highest opset and converts; see nasq.export.lower).
    opset: int = Field(default=21, ge=21, le=21)
    # Layer-wise refinement of the picked subnet's quantized weights on the calibration images
    # before it is written (nasq.export.refine; these are its registered REFINERS).
    refine: Literal["none", "bias_correction", "adaround", "flexround", "quantease"] = "none"
    # How the integer kernels' int8 weights are stored in model.onnx (same values): ``auto`` picks
    # uint8 codes with zero point 128 on an x86 CPU without VNNI, where onnxruntime's uint8 x int8
    # kernel saturates and so disagrees with torch, int8 codes elsewhere; ``int8`` for OpenVINO
    # (its int8 convolutions want symmetric weights), ``uint8`` for any x86 onnxruntime.
    int8_weights: Literal["auto", "int8", "uint8"] = "auto"


class ExperimentConfig(Frozen):
    """``name``: the experiment's (and its MLflow run's) name, :data:`NAME_PATTERN`.
    ``workdir``: the run folder, a template whose only field is ``{name}``. A relative workdir
    (the default ``runs/{name}``) lies below the current directory and may not contain ``..``; an
    absolute one is taken as written (the file's author chose that root), also without ``..``.
    nasq writes only its own files there and deletes only folders it wrote itself.
    ``space``, ``predictor`` and each ``hardware`` entry: a catalog name, or a file path (with a
    ``/`` or a ``.yaml`` suffix) relative to the experiment file.
    ``hardware``: one or more target profiles. Per-target metrics (``latency_ms``, ``throughput_ips``)
    are named ``<metric>@<profile>`` in objectives and constraints; plain, they are the first
    profile's. ``allow_emulated``: false (the default) refuses, when the experiment loads, a space
    whose precision menu holds a format some target only emulates (its profile's
    ``emulated_formats``); true lets the search use such formats - the layers that run them are
    counted in the front's ``emulated_layers`` column."""

    # Keys once accepted and never acted on: refused by name, saying why and what to use instead.
    retired_keys: ClassVar[dict[tuple[str, ...], tuple[str, str]]] = {
        ("search", "algorithm"): ("not accepted (it was never used)",
                                  f"set search.strategy instead, one of {', '.join(get_args(Strategy))}"),
    }

    schema_version: int = SCHEMA_VERSION
    name: Name = "demo"
    workdir: str = "runs/{name}"
    data: DataConfig = DataConfig()
    space: CatalogRef = "mbconv_small"
    hardware: tuple[CatalogRef, ...] = Field(default=("cpu_roofline",), min_length=1, max_length=MAX_CHOICES)
    allow_emulated: bool = False
    predictor: CatalogRef = "gbdt_onehot"
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    objectives: tuple[Metric, ...] = Field(default=("top1", "latency_ms", "size_mb"), min_length=2, max_length=4)
    constraints: tuple[ConstraintSpec, ...] = Field(default=(), max_length=MAX_CHOICES)
    search: SearchConfig = SearchConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()
    export: ExportConfig = ExportConfig()

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str, info: ValidationInfo) -> str:
        check_workdir_template(v)
        if "name" in info.data:  # an invalid name is reported on its own field
            workdir_path(v, info.data["name"])
        return v

    @field_validator("hardware")
    @classmethod
    def _unique_profiles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique("hardware", v)

    @field_validator("objectives", mode="before")
    @classmethod
    def _declared_goals(cls, v: Any) -> Any:
        """``{name: top1, goal: max}`` (the form generic searches use) is accepted for nasq's own
        metrics when the goal is the metric's own; the entry becomes the metric's name."""
        if not isinstance(v, list | tuple):
            return v
        out = []
        for i, entry in enumerate(v):
            if isinstance(entry, dict):
                name, goal = entry.get("name"), entry.get("goal")
                if set(entry) != {"name", "goal"} or not isinstance(name, str):
                    raise ValueError(f"objectives[{i}]: a metric name or {{name, goal}}, got {show(entry)}")
                own = METRIC_GOALS.get(metric_base(name))
                if own is not None and goal != own:
                    raise ValueError(f"objectives[{i}].goal: {name} is a metric to {own}imise, got {show(goal)}")
                entry = name
            out.append(entry)
        return out

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
            raise ValueError(f"unsupported schema_version, expected {SCHEMA_VERSION}, got {show(v)}")
        return v


# ---------------------------------------------------------------- loading
M = TypeVar("M", bound=BaseModel)
_LOC_PART_CHARS = 40


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = one_line(part, _LOC_PART_CHARS)  # a key of the user's file: may be anything
            out += ("." if out else "") + text
    return out


def _first_error(err: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = format_loc(loc) or "(top level)"
    msg = one_line(str(e["msg"]).removeprefix("Value error, "))
    value = e.get("input")
    if e["type"] == "extra_forbidden":
        retired = getattr(model, "retired_keys", {}).get(loc)
        if retired:
            why, instead = retired
            return field, f"{why}, got {show(value)}; {instead}"
        return field, "unknown key"
    if e["type"] == "missing":
        return field, "required field is missing"
    if e["type"] == "value_error" and ", got " in msg:  # our validators name the value themselves
        return field, msg
    return field, f"{msg}, got {show(value)}"


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


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, nesting deeper than :data:`MAX_NESTING`
    (before the recursive composer gets there) and integers longer than :data:`MAX_INT_CHARS`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_NESTING} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {show(key)}",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: Any) -> int:
        if len(str(node.value)) > MAX_INT_CHARS:
            raise yaml.constructor.ConstructorError(None, None, f"integer longer than {MAX_INT_CHARS} "
                                                    f"characters ({len(node.value)})", node.start_mark)
        return super().construct_yaml_int(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def _expanded(obj: Any, depth: int, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, height) of ``obj`` with every alias expanded; ValueError past the bounds. Shared
    subtrees are counted once per use but walked once, so an alias bomb is measured, not expanded."""
    if not isinstance(obj, dict | list):
        return 1, 0
    hit = memo.get(id(obj))
    if hit is None:
        if depth > MAX_NESTING:  # a cycle (an alias inside its own anchor) ends here too
            raise ValueError(f"nested deeper than {MAX_NESTING} levels (through aliases)")
        children = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
        size, height = 1, 0
        for child in children:
            n, h = _expanded(child, depth + 1, memo)
            size, height = size + n, max(height, h + 1)
            if size > MAX_NODES:
                raise ValueError(f"more than {MAX_NODES:,} values once aliases are expanded")
        hit = memo[id(obj)] = (size, height)
    if depth + hit[1] > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels (through aliases)")
    return hit


def _yaml_error(e: yaml.YAMLError) -> tuple[str, str]:
    if isinstance(e, yaml.reader.ReaderError):
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else show(e.character)
        return f"character {e.position + 1}", f"not valid YAML: {one_line(e.reason)} ({char})"
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"line {mark.line + 1}" if mark else "(parse)"
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or e
    return where, f"not valid YAML: {one_line(problem)}"


def parse_yaml(raw: bytes, source: str) -> Any:
    """The data of a YAML document (UTF-8, at most MAX_FILE_BYTES), parsed by :class:`StrictLoader`;
    any problem is one ConfigError line."""
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(source, "", f"larger than {MAX_FILE_BYTES // 1024} KiB ({len(raw):,} bytes)")
    text = decode_utf8(raw, source, "utf-8-sig")
    loader = None
    try:
        loader = StrictLoader(text)
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(source, *_yaml_error(e)) from None
    except (ValueError, TypeError, OverflowError) as e:  # a constructor's conversion of a scalar
        raise ConfigError(source, "(parse)", f"not valid YAML: {one_line(e)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    try:
        _expanded(data, 0, {})
    except ValueError as e:
        raise ConfigError(source, "", str(e)) from None
    return data


def read_bounded(path: Path, limit: int, source: str) -> bytes:
    """The bytes of a user's file, at most ``limit`` of them: a missing, unreadable or too large
    file, or an unusable path, is one ConfigError line naming ``source``."""
    try:
        if not path.is_file():
            raise ConfigError(source, "", "file not found")
        if path.stat().st_size > limit:
            raise ConfigError(source, "", f"larger than {limit // 1024} KiB ({path.stat().st_size:,} bytes)")
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except ConfigError:
        raise
    except OSError as e:
        raise ConfigError(source, "", f"cannot read ({one_line(e.strerror or e)})") from None
    except ValueError as e:  # e.g. an embedded NUL in the path
        raise ConfigError(source, "", f"not a usable path ({one_line(e)})") from None
    if len(raw) > limit:  # grew while read
        raise ConfigError(source, "", f"larger than {limit // 1024} KiB")
    return raw


def decode_utf8(raw: bytes, source: str, encoding: str = "utf-8") -> str:
    """``raw`` as text; bytes that are not UTF-8 are one ConfigError line naming the first one."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ConfigError(source, f"byte {e.start + 1}", f"not UTF-8 text ({raw[e.start:e.start + 1]!r})") from None


def read_yaml(path: Path, source: str | None = None) -> tuple[Any, bytes]:
    source = source or str(path)
    raw = read_bounded(path, MAX_FILE_BYTES, source)
    return parse_yaml(raw, source), raw


def load_model(model: type[M], path: Path, source: str | None = None) -> tuple[M, str]:
    """Load and validate one YAML file; returns the model and the file's content hash."""
    data, raw = read_yaml(path, source)
    return validate(model, data, source or str(path)), sha256_bytes(raw)
