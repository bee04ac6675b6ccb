"""Property-based fuzzing of everything nasq reads from a user: experiment, search-space,
hardware-profile and predictor-recipe files, measured latency tables (``latency.csv``) and their
fitted corrections (``latency_model.json``), and the ``--where`` grammar.

Inputs start from the shipped files and are mutated: values replaced by hostile ones (huge
integers, NaN and infinity, long strings, nested lists and dicts, None, wrong types, deep nesting),
keys deleted, added or duplicated, lines duplicated or dropped, bytes that are not UTF-8 inserted.
The property: the input loads, or raises a :class:`~nasq.errors.NasqError` whose message is one
line under :data:`MAX_MESSAGE` characters. Any other exception is a bug.

The budget here is small and the run derandomized (the same examples on every machine);
``benchmarks/fuzz.py`` runs the same strategies with a large budget and reports figures.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasq.errors import NasqError
from nasq.experiment import load_experiment
from nasq.hardware import HardwareProfile
from nasq.hardware.table import LATENCY_CSV, LatencyTable
from nasq.predict.fit import Recipe
from nasq.predict.latency import LATENCY_MODEL_JSON, load_profile_predictor
from nasq.search.query import parse_where
from nasq.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]
MAX_MESSAGE = 1000
MEASURED = REPO / "hardware_profiles" / "cpu_ort_epyc"
METRICS = ("top1", "latency_ms", "size_mb", "bops_g", "top1_pred", "latency_ms_pred")


# ---------------------------------------------------------------- hostile values
def _nest(depth: int, leaf: Any = 1, as_dict: bool = False) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if as_dict else [leaf]
    return leaf


SPECIAL_NUMBERS = (0, -1, 1, 2**31, 2**63, 10**9, 10**12, 10**30, -(10**18), 10**200, 0.5, -0.0, 1e-300, 1e300,
                   float("nan"), float("inf"), float("-inf"), True, False)
scalars = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "../", "{", "é", "\t", "a\nb", "\x00", "%s", "{name}"]),
              st.integers(0, 3000)),
    st.sampled_from(["", "..", "/", "/etc", "runs/../../x", "{name.__class__}", "{0}", "{", "}", "nan", "inf",
                     "1e999", "0x" + "f" * 40, "~", "-", "None", "null", "true", "fp32", "int8", "mbconv",
                     "cpu_roofline", "gbdt", "onehot", "knee", "linas", "digits"]),
    st.none(),
    st.booleans(),
)
# Values a careless user might write: they get past the schema more often, and so reach the
# checks behind it (block kinds, shapes, the supernet-size bound, cross references).
plausible = st.one_of(
    st.integers(-2, 300), st.floats(0, 10, allow_nan=False), st.sampled_from(("fp32", "int8", "int4", "mbconv", "vit")),
    st.lists(st.integers(0, 12), min_size=1, max_size=4), st.lists(st.sampled_from((0.25, 0.5, 1, 2, 3, 4, 6)), max_size=3),
)
hostile = st.one_of(
    plausible,
    scalars,
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=4), max_leaves=8),
    st.builds(_nest, st.integers(0, 300), scalars, st.booleans()),
    st.builds(lambda v, n: [v] * n, scalars, st.integers(0, 2000)),
)


# ---------------------------------------------------------------- document mutations
def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every (path to a container, key or index) in ``doc``."""
    out: list[tuple] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw: Any, doc: Any) -> Any:
    """``doc`` with one to three values replaced, keys deleted or added."""
    doc = copy.deepcopy(doc)
    pick = draw(st.randoms(use_true_random=False))  # uniform over paths (sampled_from favours the first)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            return draw(hostile)
        where, key = pick.choice(paths)
        parent = _at(doc, where)
        op = draw(st.sampled_from(("replace", "replace", "replace", "delete", "add")))
        if op == "replace":
            parent[key] = draw(hostile)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.one_of(st.text(max_size=12), st.sampled_from(sorted(map(str, parent)))))] = draw(hostile)
        else:
            parent.append(draw(hostile))
    return doc


def _dump_yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=10**6).encode("utf-8", "surrogatepass")


def _dump_json(doc: Any) -> bytes:
    return json.dumps(doc).encode("utf-8", "surrogatepass")


TEXT_OPS = ("none", "none", "none", "dup_line", "drop_line", "bytes", "truncate", "anchor_bomb", "deep_text")


@st.composite
def text_mutated(draw: Any, raw: bytes) -> tuple[bytes, str]:
    """Byte-level damage on top: duplicated or dropped lines (duplicate keys), non-UTF-8 bytes,
    truncation, an alias bomb, deep flow nesting."""
    op = draw(st.sampled_from(TEXT_OPS))
    lines = raw.split(b"\n")
    if op == "dup_line" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    elif op == "drop_line" and lines:
        del lines[draw(st.integers(0, len(lines) - 1))]
    elif op == "bytes":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=8)) + raw[i:]
        return raw, op
    elif op == "truncate":
        return raw[: draw(st.integers(0, len(raw)))], op
    elif op == "anchor_bomb":
        levels = draw(st.integers(2, 10))
        bomb = ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
        bomb += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, levels)]
        lines = [b.encode() for b in bomb] + lines
    elif op == "deep_text":
        depth = draw(st.integers(1, 20_000))
        lines.append(b"deep: " + b"[" * depth + b"]" * draw(st.sampled_from((0, depth))))
    return b"\n".join(lines), op


# ---------------------------------------------------------------- targets
@dataclass
class Target:
    """One kind of user input: its shipped seeds, how a mutant is serialised, and how nasq loads it."""

    name: str
    seeds: list[Path]
    dump: Callable[[Any], bytes]
    load: Callable[[Path, Path], Any]  # (file written, its folder) -> anything
    file_name: str
    parse: Callable[[bytes], Any] = yaml.safe_load


@functools.cache
def demo_space() -> SearchSpace:
    return SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")


def _load_model(path: Path, folder: Path) -> Any:
    return load_profile_predictor(folder / "profile.yaml", demo_space())


TARGETS = {
    "experiment": Target("experiment", [REPO / "examples" / "demo.yaml"], _dump_yaml,
                         lambda p, _: load_experiment(p), "exp.yaml"),
    "space": Target("space", sorted((REPO / "search_spaces").glob("*.yaml")), _dump_yaml,
                    lambda p, _: SearchSpace.from_yaml(p).size(), "space.yaml"),
    "profile": Target("profile", sorted((REPO / "hardware_profiles").glob("*/profile.yaml")), _dump_yaml,
                      lambda p, _: HardwareProfile.from_yaml(p).check_space(demo_space()), "profile.yaml"),
    "recipe": Target("recipe", sorted((REPO / "predictors").glob("*.yaml")), _dump_yaml,
                     lambda p, _: Recipe.from_yaml(p), "recipe.yaml"),
    "latency_model": Target("latency_model", [MEASURED / LATENCY_MODEL_JSON], _dump_json, _load_model,
                            LATENCY_MODEL_JSON, parse=json.loads),
}


def _csv_cells(raw: bytes) -> list[list[str]]:
    return [line.split(",") for line in raw.decode().splitlines()]


@st.composite
def csv_mutant(draw: Any) -> tuple[bytes, str]:
    """``latency.csv`` with cells replaced by hostile text, rows duplicated or dropped, bytes damaged."""
    rows = _csv_cells((MEASURED / LATENCY_CSV).read_bytes())[: draw(st.integers(1, 40))]
    for _ in range(draw(st.integers(1, 3))):
        r, c = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows[0]) - 1))
        value = draw(st.one_of(scalars.map(str), st.builds(lambda n: "9" * n, st.integers(0, 5000)),
                               st.builds(lambda n: "x" * n, st.integers(0, 200_000))))
        if c < len(rows[r]):
            rows[r][c] = value
    raw = "\n".join(",".join(row) for row in rows).encode("utf-8", "surrogatepass") + b"\n"
    return draw(text_mutated(raw))


@st.composite
def document(draw: Any, target: Target) -> tuple[bytes, str]:
    """A mutated file of ``target``: bytes, and a short description of what was done."""
    seed = draw(st.sampled_from(target.seeds))
    doc = draw(mutated(target.parse(seed.read_bytes())))
    raw, op = draw(text_mutated(target.dump(doc)))
    return raw, f"{seed.relative_to(REPO)} mutated, text op {op}"


# ---------------------------------------------------------------- the --where grammar
where_tokens = st.one_of(
    st.sampled_from(METRICS), st.sampled_from(("<", "<=", ">", ">=", "==", "!=", "=", "<>")),
    st.sampled_from(("and", "or", "AND", "not", "(", ")", "((", "))")),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
    st.sampled_from(("1e999", "-1e999", "1e-999", "nan", "inf", ".5", "5.", "1e", "--1", "+2")),
    st.builds(lambda n: "9" * n, st.integers(1, 500)), st.text(max_size=5),
)


comparison = st.builds(lambda name, op, x, flip: f"{x!r} {op} {name}" if flip else f"{name} {op} {x!r}",
                       st.sampled_from(METRICS), st.sampled_from(("<", "<=", ">", ">=", "==", "!=")),
                       st.floats(-1e6, 1e6), st.booleans())
well_formed = st.recursive(comparison, lambda inner: st.one_of(
    st.builds(lambda a, b, op: f"{a} {op} {b}", inner, inner, st.sampled_from(("and", "or"))),
    inner.map(lambda e: f"({e})")), max_leaves=12)


@st.composite
def where_text(draw: Any) -> str:
    kind = draw(st.sampled_from(("well_formed", "tokens", "tokens", "nested", "long", "text")))
    if kind == "well_formed":
        return draw(well_formed)
    if kind == "tokens":
        return " ".join(draw(st.lists(where_tokens, min_size=0, max_size=12)))
    if kind == "nested":
        depth = draw(st.integers(0, 2000))
        return "(" * depth + draw(st.sampled_from(METRICS)) + " > 1" + ")" * draw(st.sampled_from((depth, 0, depth + 1)))
    if kind == "long":
        return " and ".join(["top1 > 1"] * draw(st.integers(1, 20_000)))
    return draw(st.text(alphabet=string.printable, max_size=200))


# ---------------------------------------------------------------- the property
class Crash(AssertionError):
    """An input made nasq fail other than with a one-line NasqError."""


def check(call: Callable[[], Any], what: str) -> str:
    """Run ``call``; returns ``"accepted"`` or ``"refused"``, raises :class:`Crash` otherwise."""
    try:
        call()
    except NasqError as e:
        msg = str(e)
        if "\n" in msg or len(msg) >= MAX_MESSAGE:
            raise Crash(f"{what}: multi-line or long NasqError ({len(msg)} chars): {msg[:300]!r}") from e
        return "refused"
    except Exception as e:  # noqa: BLE001 - any other exception is what this suite hunts
        raise Crash(f"{what}: {type(e).__name__}: {str(e)[:300]}") from e
    return "accepted"


def run_file(target: Target, folder: Path, raw: bytes, what: str) -> str:
    path = folder / target.file_name
    path.write_bytes(raw)
    return check(lambda: target.load(path, folder), what)


def workspace(root: Path) -> Path:
    """A folder with the measured profile (the latency model's neighbours) and room for mutants."""
    folder = root / "fuzz"
    folder.mkdir(exist_ok=True)
    for name in (LATENCY_CSV, "profile.yaml"):
        shutil.copy(MEASURED / name, folder / name)
    return folder


# ---------------------------------------------------------------- the tests (small budget)
BUDGET = {"experiment": 120, "space": 150, "profile": 100, "recipe": 150, "latency_model": 100}
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                   HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return workspace(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("name", sorted(BUDGET))
def test_mutated_files_load_or_refuse_in_one_line(folder, name):
    target = TARGETS[name]

    @settings(max_examples=BUDGET[name], **FUZZ)
    @given(document(target))
    def prop(case: tuple[bytes, str]) -> None:
        raw, what = case
        run_file(target, folder, raw, what)

    prop()


@settings(max_examples=80, **FUZZ)
@given(csv_mutant())
def test_mutated_latency_tables_load_or_refuse_in_one_line(folder, case):
    raw, op = case
    path = folder / "mutant.csv"
    path.write_bytes(raw)
    check(lambda: LatencyTable.load(path), f"latency.csv mutated, text op {op}")


@settings(max_examples=400, **FUZZ)
@given(where_text())
def test_where_parses_or_refuses_in_one_line(text):
    check(lambda: parse_where(text, set(METRICS)), f"--where {text[:60]!r}")


def test_the_shipped_files_are_accepted(folder):
    for target in TARGETS.values():
        for seed in target.seeds:
            assert run_file(target, folder, seed.read_bytes(), str(seed)) == "accepted"
