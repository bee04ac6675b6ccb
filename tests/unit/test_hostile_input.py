"""Hostile input found by an outside tester: each is accepted, or refused with one short line (a
NasqError naming file, field and value), never a traceback and never after work was done."""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nasq.cli import app
from nasq.errors import ConfigError, NasqError
from nasq.experiment import Experiment, load_experiment, remove_own_folder
from nasq.hardware import HardwareProfile
from nasq.hardware.table import LatencyTable
from nasq.predict.fit import Recipe
from nasq.predict.latency import LATENCY_MODEL_JSON, LatencyPredictor, load_profile_predictor
from nasq.search.query import parse_where
from nasq.space import SearchSpace
from nasq.specs import (
    ExperimentConfig,
    SpaceConfig,
    check_name,
    load_model,
    read_yaml,
    show,
    workdir_path,
)

REPO = Path(__file__).resolve().parents[2]
BASE = {"name": "hostile", "data": {"name": "digits"}, "space": "mbconv_small", "hardware": ["cpu_roofline"],
        "predictor": "gbdt_onehot"}


@pytest.fixture(autouse=True)
def _catalog(monkeypatch):
    monkeypatch.setenv("NASQ_CATALOG", str(REPO))


def one_line(err: BaseException) -> str:
    msg = str(err)
    assert "\n" not in msg and len(msg) < 1000, msg[:2000]
    return msg


def refused(path: Path, *, loader=load_experiment) -> str:
    with pytest.raises(NasqError) as e:
        loader(path)
    return one_line(e.value)


def exp_file(tmp_path: Path, text: str | None = None, **over) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text if text is not None else yaml.safe_dump({**BASE, **over}))
    return p


def space_dict(name: str = "mbconv_small") -> dict:
    return yaml.safe_load((REPO / "search_spaces" / f"{name}.yaml").read_text())


def space_file(tmp_path: Path, data) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


# ---------------------------------------------------------------- 1. workdir, names, deletion
@pytest.mark.parametrize("template", ["{name.__class__.__mro__}", "{name[0]}", "{name!r}", "{name:>300}", "{0}",
                                      "{}", "{other}"])
def test_workdir_template_fills_in_plain_name_only(tmp_path, template):
    msg = refused(exp_file(tmp_path, workdir=template))
    assert "workdir: only {name} may be filled in" in msg


def test_workdir_unbalanced_brace_is_refused_by_validate_not_run(tmp_path):
    msg = refused(exp_file(tmp_path, workdir="{"))
    assert "workdir: not a valid template" in msg and "got '{'" in msg


@pytest.mark.parametrize("name", ["../../../x", "a/b", ".hidden", "", "x" * 101, "a b", "a\nb"])
def test_experiment_name_must_be_a_name(tmp_path, name):
    msg = refused(exp_file(tmp_path, name=name))
    assert "name: must be a name" in msg


@pytest.mark.parametrize("workdir", ["runs/../../x", "..", ".", "./.", "/", "", "/tmp/{name}/../y", "runs/\x00x"])
def test_workdir_stays_inside_its_root(tmp_path, workdir):
    msg = refused(exp_file(tmp_path, workdir=workdir))
    assert msg.startswith(f"{tmp_path / 'exp.yaml'}: workdir: ")


def test_workdir_relative_below_cwd_or_absolute_as_written(tmp_path):
    assert workdir_path("runs/{name}", "demo") == Path("runs/demo")
    assert workdir_path("./runs/{{x}}-{name}", "d") == Path("runs/{x}-d")
    assert workdir_path(str(tmp_path / "r-{name}"), "d") == tmp_path / "r-d"
    exp = load_experiment(exp_file(tmp_path, workdir="out/{name}"))
    assert exp.workdir == Path("out/hostile")


def test_workdir_rechecked_when_the_config_was_built_without_validation(tmp_path):
    exp = load_experiment(exp_file(tmp_path))
    bad = Experiment(ExperimentConfig.model_construct(name="../x", workdir="runs/{name}"), "e.yaml", "", exp.space,
                     exp.profiles, exp.recipe, exp.base_dir, exp.latency)
    with pytest.raises(ConfigError, match="e.yaml: workdir: must be a name"):
        _ = bad.workdir


@pytest.mark.parametrize("field,value", [("space", "x" * 300), ("predictor", "x" * 300), ("hardware", ["x" * 300]),
                                         ("space", "bad name"), ("predictor", "a\x00b"),
                                         ("space", "d/" + "y" * 300 + ".yaml")])
def test_catalog_references_are_names_or_sane_paths(tmp_path, field, value):
    msg = refused(exp_file(tmp_path, **{field: value}))
    assert f": {field}" in msg


def test_tracking_experiment_and_constraint_profile_are_names(tmp_path):
    assert "tracking.experiment: must be a name" in refused(exp_file(tmp_path, tracking={"experiment": "a'b"}))
    msg = refused(exp_file(tmp_path, constraints=[{"metric": "size_mb", "max": 1, "profile": "../p"}]))
    assert "constraints[0].profile: must be a name" in msg


def test_cache_dir_confined_like_the_workdir(tmp_path):
    assert "search.cache_dir: must not contain '..'" in refused(exp_file(tmp_path, search={"cache_dir": "../c"}))


def test_shipped_catalog_names_stay_valid():
    for folder, pattern in (("search_spaces", "*.yaml"), ("predictors", "*.yaml"),
                            ("hardware_profiles", "*/profile.yaml"), ("examples", "*.yaml")):
        for path in sorted((REPO / folder).glob(pattern)):
            data = yaml.safe_load(path.read_text())
            check_name(data["name"])  # the same name rule everywhere
            for ref in ("space", "predictor"):
                if ref in data:
                    check_name(data[ref])
    load_experiment(REPO / "examples" / "demo.yaml")


def test_remove_own_folder_deletes_only_what_nasq_wrote(tmp_path):
    own = tmp_path / "export"
    own.mkdir()
    for name in ("model.onnx", "manifest.json", ".arch.json.k2j3h4g5.tmp"):
        (own / name).write_text("x")
    remove_own_folder(own, ("model.onnx", "manifest.json", "arch.json"))
    assert not own.exists()
    remove_own_folder(own, ("model.onnx",))  # absent: nothing to do

    theirs = tmp_path / "checkpoint"
    theirs.mkdir()
    (theirs / "checkpoint.json").write_text("{}")
    (theirs / "thesis.tex").write_text("years of work")
    with pytest.raises(NasqError, match="holds 'thesis.tex', which nasq did not write; nothing deleted") as e:
        remove_own_folder(theirs, ("checkpoint.json", "checkpoint.safetensors"))
    one_line(e.value)
    assert (theirs / "thesis.tex").is_file()

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.onnx").mkdir()  # a folder named like a file of ours
    with pytest.raises(NasqError):
        remove_own_folder(tmp_path / "sub", ("model.onnx",))
    link = tmp_path / "link"
    link.symlink_to(theirs)
    with pytest.raises(NasqError, match="symlink"):
        remove_own_folder(link, ("checkpoint.json",))
    assert (theirs / "thesis.tex").is_file()


def test_no_stage_deletes_a_folder_except_through_remove_own_folder():
    calls = []
    for path in sorted((REPO / "nasq" / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "rmtree":
                calls.append(path.name)
    assert calls == []


# ---------------------------------------------------------------- 2. sizes
@pytest.mark.parametrize("over,field", [
    ({"search": {"population": 10**9}}, "search.population"),
    ({"search": {"generations": 10**9}}, "search.generations"),
    ({"evaluate": {"num_subnets": 10**9}}, "evaluate.num_subnets"),
    ({"evaluate": {"val_images": 10**12}}, "evaluate.val_images"),
    ({"train": {"epochs": 1e12}}, "train.epochs"),
    ({"train": {"epochs": float("nan")}}, "train.epochs"),
    ({"train": {"lr": float("inf")}}, "train.lr"),
    ({"search": {"seed": -1}}, "search.seed"),
    ({"train": {"seed": 2**40}}, "train.seed"),
    ({"data": {"seed": -5}}, "data.seed"),
    ({"constraints": [{"metric": "size_mb", "max": float("nan")}]}, "constraints[0].max"),
    ({"ray": {"num_cpus": 10**9}}, "ray.num_cpus"),
    ({"export": {"opset": 99}}, "export.opset"),
])
def test_experiment_sizes_and_floats_are_bounded(tmp_path, over, field):
    msg = refused(exp_file(tmp_path, **over))
    assert f": {field}: " in msg


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["stages"][0].update(width=10**9), "stages[0].width"),
    (lambda d: d["stem"].update(channels=10**9), "stem.channels"),
    (lambda d: d["input"].update(num_classes=10**9), "input.num_classes"),
    (lambda d: d["input"].update(resolution=10**6), "input.resolution"),
    (lambda d: d["stages"][0].update(depth=[200]), "stages[0].depth"),
    (lambda d: d["stages"][0].update(depth=[10**6]), "stages[0].depth"),
    (lambda d: d["stages"][0].update(depth=list(range(1, 200))), "stages[0].depth"),
    (lambda d: d["stages"][0].update(expand=[3, float("nan")]), "stages[0].expand"),
    (lambda d: d["stages"][0].update(expand=[3, float("inf")]), "stages[0].expand"),
    (lambda d: d["stages"][0].update(expand=[3, 10**6]), "stages[0].expand"),
    (lambda d: d["stages"][0].update(kernel=[3, 301]), "stages[0].kernel"),
    (lambda d: d["precision"].update(weights={"int8": float("nan")}), "precision.weights"),
    (lambda d: d.update(stages=d["stages"] * 40), "stages"),
])
def test_space_sizes_and_floats_are_bounded(tmp_path, edit, field):
    d = space_dict()
    edit(d)
    started = time.perf_counter()
    msg = refused(space_file(tmp_path, d), loader=SearchSpace.from_yaml)
    assert f": {field}" in msg and time.perf_counter() - started < 5


def test_a_space_whose_largest_subnet_does_not_fit_is_refused(tmp_path):
    d = space_dict()
    d["stages"][2].update(width=8192, depth=[64], expand=[64])
    msg = refused(space_file(tmp_path, d), loader=SearchSpace.from_yaml)
    assert "stages: the largest subnet has" in msg and "weights" in msg


def test_space_size_beyond_a_float_is_inf_not_overflow_error():
    d = space_dict()
    d["stages"] = [{"block": "mbconv", "width": 8, "depth": [64], "kernel": list(range(1, 64, 2)),
                    "expand": list(range(1, 65))}]
    d["precision"] = {"w_format": ["fp32", "bf16", "fp16", "int8", "int4", "int6", "int5", "int3"],
                      "a_format": ["fp32", "bf16", "fp16", "int8", "int4", "int6", "int5", "int3"]}
    space = SearchSpace.from_dict(d)  # (32 x 64 x 8 x 8) ** 64 = 2 ** 1088 subnets
    assert space.size() == math.inf
    assert SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml").size() == pytest.approx(2.95e14, rel=0.01)


@pytest.mark.parametrize("rates", [{"fp32": float("nan")}, {"fp32": float("inf")}, {"fp32": 1e300}])
def test_profile_rates_finite_and_bounded(rates):
    data = yaml.safe_load((REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml").read_text())
    data["peak_gops"] = {**data["peak_gops"], **rates}
    with pytest.raises(ConfigError, match="peak_gops") as e:
        HardwareProfile.from_dict(data)
    one_line(e.value)


def test_yaml_nan_and_inf_spellings_refused(tmp_path):
    for text in ("train: {epochs: .nan}", "train: {lr: .inf}", "train: {epochs: 1e999}"):
        assert "train." in refused(exp_file(tmp_path, text))


# ---------------------------------------------------------------- 3. the YAML loader
def test_duplicate_keys_refused(tmp_path):
    msg = refused(exp_file(tmp_path, "name: a\nname: b\n"))
    assert "line 2: not valid YAML: duplicate key 'name'" in msg
    msg = refused(exp_file(tmp_path, "train:\n  epochs: 1\n  epochs: 2\n"))
    assert "duplicate key 'epochs'" in msg


def test_merge_keys_may_override_what_they_merge(tmp_path):
    p = space_file(tmp_path, "a: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n")
    assert read_yaml(p)[0]["c"] == {"x": 3, "y": 2}


@pytest.mark.parametrize("text", ["a: " + "[" * 10_000, "a: " + "{b: " * 5_000, "a:\n" + "".join(
    " " * (2 * i) + f"k{i}:\n" for i in range(1, 200))])
def test_deep_nesting_refused_before_recursion(tmp_path, text):
    msg = refused(exp_file(tmp_path, text))
    assert "nested deeper than 64 levels" in msg


def test_file_size_bounded_before_parsing(tmp_path):
    p = exp_file(tmp_path, "description: '" + "x" * (2 << 20) + "'\n")
    assert "larger than 1024 KiB" in refused(p)


def _bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_measured_not_expanded(tmp_path):
    started = time.perf_counter()
    assert "more than 100,000 values once aliases are expanded" in refused(exp_file(tmp_path, _bomb(9)))
    assert "more than 100,000 values" in refused(exp_file(tmp_path, "description: " + _bomb(6).replace("\n", "\n  ")
                                                          .replace("l0:", "\n  l0:", 1)))
    assert time.perf_counter() - started < 5


def test_recursive_alias_refused(tmp_path):
    assert "nested deeper than 64 levels (through aliases)" in refused(exp_file(tmp_path, "a: &a [*a]\n"))


def test_an_alias_tree_value_is_echoed_short(tmp_path):
    # the tester's 226 MB message: an alias tree under 100,000 values, echoed in an error
    msg = refused(exp_file(tmp_path, _bomb(5) + "name: *l3\n"))
    assert "name: " in msg


@pytest.mark.parametrize("raw,where", [(b"name: \xff\xfe\n", "byte 7: not UTF-8 text"),
                                       (b"name: a\x07b\n", "not valid YAML: special characters are not allowed"),
                                       (b"\x00\x00", "not valid YAML")])
def test_non_utf8_and_control_bytes_one_line(tmp_path, raw, where):
    p = tmp_path / "exp.yaml"
    p.write_bytes(raw)
    assert where in refused(p)


def test_huge_integer_refused_by_the_loader(tmp_path):
    assert "integer longer than 40 characters" in refused(exp_file(tmp_path, "name: " + "1" * 4400 + "\n"))
    assert "search.population" in refused(exp_file(tmp_path, "search: {population: 0x" + "f" * 30 + "}\n"))


def test_unreadable_experiment_is_one_line(tmp_path):
    assert "cannot read" in refused(tmp_path / ("x" * 300 + ".yaml"))
    assert "file not found" in refused(tmp_path)


# ---------------------------------------------------------------- 4. the tester's crash kinds
def test_messages_are_one_line_whatever_the_keys_and_values(tmp_path):
    for text in ('"na\\nme": 1\n', '"' + "k" * 5000 + '": 1\n', "train: {epochs: [" + ",".join(["1"] * 5000) + "]}\n",
                 "objectives: [top1, 'a\\nb']\n", "space: {a: b}\n", "hardware: [cpu_roofline, cpu_roofline]\n"):
        refused(exp_file(tmp_path, text))


@pytest.mark.parametrize("members", [".inf", "null", "-.inf", "'x'", "1e12", "[1]", "{a: 1}", "99999999999"])
def test_recipe_params_of_the_wrong_kind_are_one_line(tmp_path, members):
    p = tmp_path / "r.yaml"
    p.write_text(f"name: r\nkind: ensemble\nfeatures: [onehot]\nparams: {{members: {members}}}\n")
    msg = refused(p, loader=Recipe.from_yaml)
    assert "params" in msg


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prof")
    for f in (REPO / "hardware_profiles" / "cpu_ort_epyc").iterdir():
        shutil.copy(f, folder / f.name)
    return folder


def _model_refused(measured: Path, tmp_path: Path, edit) -> str:
    folder = tmp_path / "p"
    shutil.copytree(measured, folder)
    path = folder / LATENCY_MODEL_JSON
    data = json.loads(path.read_text())
    path.write_text(edit(data) if callable(edit) else edit)
    space = SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml")
    with pytest.raises(NasqError) as e:
        load_profile_predictor(folder / "profile.yaml", space)
    return one_line(e.value)


@pytest.mark.parametrize("edit,expected", [
    (lambda d: json.dumps({**d, "coef": ["a"] * len(d["coef"])}), "coef[0]"),
    (lambda d: json.dumps({**d, "ridge": [1]}), "ridge"),
    (lambda d: json.dumps({**d, "n_fit": 1e400}).replace("Infinity", "1e400"), "n_fit"),
    (lambda d: json.dumps({**d, "n_fit": None}), "n_fit"),
    (lambda d: json.dumps({**d, "intercept": float("nan")}), "intercept"),
    (lambda d: json.dumps({**d, "coef": [float("inf")] * len(d["coef"])}), "coef[0]"),
    (lambda d: json.dumps({**d, "features": ["x" * 100_000]}), "features"),
    (lambda d: json.dumps({**d, "features": [[1]] * 3}), "features[0]"),
    (lambda d: json.dumps({**d, "fit_rmse_ms": "fast"}), "fit_rmse_ms"),
    (lambda d: "[" * 100_000, "not valid JSON"),
    (lambda d: json.dumps(d)[:-20], "not valid JSON"),
    (lambda d: "\xff", "not valid JSON"),
])
def test_malformed_latency_model_json_is_one_line(measured, tmp_path, edit, expected):
    assert expected in _model_refused(measured, tmp_path, edit)


def test_non_utf8_latency_model_json(measured, tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(measured, folder)
    (folder / LATENCY_MODEL_JSON).write_bytes(b'{"kind": "\xff"}')
    with pytest.raises(NasqError) as e:
        LatencyPredictor.load(folder / LATENCY_MODEL_JSON, SearchSpace.from_yaml(REPO / "search_spaces" / "mbconv_small.yaml"),
                              LatencyTable.load(folder / "latency.csv"))
    one_line(e.value)


def _table_refused(measured: Path, tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "latency.csv"
    path.write_bytes(raw)
    with pytest.raises(NasqError) as e:
        LatencyTable.load(path)
    return one_line(e.value)


def test_latency_csv_non_utf8_huge_cells_and_huge_ints(measured, tmp_path):
    lines = (measured / "latency.csv").read_bytes().split(b"\n")
    assert lines[1].split(b",")[13] == b"supported"
    assert "not UTF-8 text" in _table_refused(measured, tmp_path, b"\n".join([lines[0], b"\xff" + lines[1]]))
    cells = lines[1].split(b",")
    for i, value, expected in ((len(cells) - 1, b"x" * 200_000, "not valid CSV"),
                               (len(cells) - 1, b"x" * 5_000, "longer than 2048 characters"),
                               (1, b"1" * 2_000, "not an integer of at most 20 characters"),
                               (1, b"1" * 19, "must be >= 1 and <= 10,000,000"),
                               (9, b"1e999", "must be a finite number > 0"),
                               (9, b"nan", "must be a finite number > 0")):
        edited = b",".join(cells[:i] + [value] + cells[i + 1:])
        assert expected in _table_refused(measured, tmp_path, b"\n".join([lines[0], edited])), expected


def test_depth_200_is_a_config_error_not_overflow(tmp_path):
    d = space_dict()
    d["stages"][0]["depth"] = [200]
    assert "stages[0].depth" in refused(space_file(tmp_path, d), loader=SearchSpace.from_yaml)


def test_show_is_short_whatever_the_value():
    nested: list = []
    for _ in range(1000):
        nested = [nested] * 9
    for value in (nested, 10**5000, "x" * 10**6, {"a" * 10**5: 1}, b"\x00" * 10**6, 1e308, float("nan")):
        assert len(show(value)) <= 80 and "\n" not in show(value)


# ---------------------------------------------------------------- 5. command lines
runner = CliRunner()


def cli(*args: str, cwd: Path) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(app, list(args))
    finally:
        os.chdir(old)
    err = result.stderr.strip()
    if result.exit_code == 2:
        assert err.startswith("nasq: error: ") and "\n" not in err and len(err) < 1100, err[:2000]
    return result.exit_code, err


@pytest.mark.parametrize("where,expected", [
    ("(" * 400 + "top1 > 1" + ")" * 400, "parentheses nested deeper than 32 levels"),
    ("top1 > 1 and " * 10_000 + "top1 > 1", "longer than 4096 characters"),
    ("top1 > 1e999", "number '1e999' is not finite"),
    ("top1 > -1e999", "is not finite"),
    ("1" * 400 + " < top1", "is not finite"),
    ("x" * 5000, "longer than 4096"),
])
def test_where_refused_in_one_line(where, expected):
    with pytest.raises(NasqError) as e:
        parse_where(where)
    assert expected in one_line(e.value)


def test_where_and_pick_checked_before_the_run_is_opened(tmp_path):
    code, err = cli("front", "no-such-run", "--where", "(" * 400 + "top1>1" + ")" * 400, cwd=tmp_path)
    assert code == 2 and "parentheses nested deeper" in err
    code, err = cli("front", "no-such-run", "--pick", "p" * 300, cwd=tmp_path)
    assert code == 2 and "--pick 'ppp" in err
    for run in ("r" * 5000, "r" * 300, "a\x00b"):  # too long for the file system, a NUL: no OSError
        code, err = cli("front", run, cwd=tmp_path)
        assert code == 2 and "RUN" in err


def test_export_out_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    code, err = cli("export", "no-such-run", "--out", "file/bundle", "--point", "0", cwd=tmp_path)
    assert code == 2 and "--out: cannot be created: 'file' is not a folder" in err
    code, err = cli("export", "no-such-run", "--out", "file", "--point", "0", cwd=tmp_path)
    assert code == 2 and "--out: exists and is not a folder" in err
    code, err = cli("export", "no-such-run", "--out", "b/" + "x" * 300, "--point", "0", cwd=tmp_path)
    assert code == 2 and "--out: each folder or file name must be at most 255 bytes" in err
    code, err = cli("export", "no-such-run", "--out", "new", "--point", str(10**4000), cwd=tmp_path)
    assert code == 2 and "--point" in err


@pytest.mark.parametrize("name", ["a'b", "x" * 300, "a/b", ""])
def test_export_register_name_checked_before_any_work(tmp_path, name):
    code, err = cli("export", "no-such-run", "--out", "new", "--point", "0", "--register", name, cwd=tmp_path)
    assert code == 2 and "--register: must be a name" in err
    assert not (tmp_path / "new").exists()


@pytest.fixture()
def search_dir(tmp_path):
    exp_file(tmp_path)
    (tmp_path / "taken").write_text("mine")
    return tmp_path


@pytest.mark.parametrize("args,expected", [
    (["--out", "taken"], "--out: exists and is not a folder"),
    (["--out", "taken/sub"], "--out: cannot be created: 'taken' is not a folder"),
    (["--resume", "taken"], "--resume: exists and is not a folder"),
    (["--seed", "-1"], "--seed: Input should be greater than or equal to 0, got -1"),
    (["--seed", str(2**64)], "--seed: Input should be less than or equal to 2147483647"),
    (["--max-true-evals", str(10**9)], "--max-true-evals: Input should be less than or equal to 100000"),
    (["--strategy", "s" * 300], "--strategy: Input should be"),
])
def test_search_options_checked_before_any_work(search_dir, args, expected):
    before = sorted(p.name for p in search_dir.iterdir())
    code, err = cli("search", "exp.yaml", *args, cwd=search_dir)
    assert code == 2 and expected in err, err
    assert sorted(p.name for p in search_dir.iterdir()) == before
    assert (search_dir / "taken").read_text() == "mine"


def test_run_refuses_a_workdir_below_a_file_before_any_work(tmp_path):
    exp_file(tmp_path, workdir="taken/{name}")
    (tmp_path / "taken").write_text("mine")
    code, err = cli("run", "exp.yaml", cwd=tmp_path)
    assert code == 2 and "exp.yaml: workdir: cannot be created: 'taken' is not a folder" in err
    code, err = cli("train", "exp.yaml", cwd=tmp_path)
    assert code == 2 and "workdir: cannot be created" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "taken"]


@pytest.mark.parametrize("args,expected", [
    (["--out", "p/" + "x" * 300], "--out: must be a name"),
    (["--out", "p/a b"], "--out: must be a name"),
    (["--out", "prof", "--backend", "b" * 300], "--backend: must be a name"),
    (["--out", "prof", "--space", "s" * 300], "--space: must be a name"),
    (["--out", "prof", "--repeats", str(10**12)], "--repeats: must be >= 0 and <= 100,000"),
])
def test_profile_measure_options_checked_before_any_work(tmp_path, args, expected):
    code, err = cli("profile", "measure", *args, cwd=tmp_path)
    assert code == 2 and expected in err
    assert list(tmp_path.iterdir()) == []


def test_jobs_ids_and_addresses_checked(tmp_path):
    code, err = cli("jobs", "status", "j" * 300, "--address", "http://127.0.0.1:1", cwd=tmp_path)
    assert code == 2 and "JOB_ID: must be a name" in err
    code, err = cli("jobs", "list", "--address", "http://x\n" + "a" * 5000, cwd=tmp_path)
    assert code == 2 and "--address: must be at most 4096 characters" in err


def test_space_file_path_with_long_components(tmp_path):
    msg = refused(exp_file(tmp_path, space="sub/" + "s" * 300 + ".yaml"))
    assert "space: each folder or file name must be at most 255 bytes" in msg


def test_load_model_still_reads_the_shipped_spaces():
    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        config, digest = load_model(SpaceConfig, path)
        assert config.name == path.stem and len(digest) == 64


# ---------------------------------------------------------------- 6. a profile's runtime and formats
def _bad_profile(tmp_path: Path, **over) -> Path:
    data = yaml.safe_load((REPO / "hardware_profiles" / "cpu_roofline" / "profile.yaml").read_text())
    data.update(over)
    folder = tmp_path / "bad_hw"
    folder.mkdir(exist_ok=True)
    (folder / "profile.yaml").write_text(yaml.safe_dump(data))
    return exp_file(tmp_path, hardware=["bad_hw/profile.yaml"])


@pytest.mark.parametrize("over, expected", [
    ({"backend": "onnxruntim"}, "backend: unknown backend 'onnxruntim' (known: onnxruntime, openvino, torch-cuda, "
                                "roofline); did you mean 'onnxruntime'?"),
    ({"backend": "../x"}, "backend: must be a name"),
    ({"threads": 0}, "threads: "),
    ({"batch_sizes": [1, 1 << 20]}, "batch_sizes: "),
    ({"batch_sizes": []}, "batch_sizes: batch_sizes needs at least one choice"),
    ({"native_formats": ["int9"]}, "native_formats[0]: unknown format 'int9'"),
    ({"emulated_formats": ["fp32", "fp32"]}, "emulated_formats: formats must be unique"),
    ({"peak_gops": {"fp32": 1.0}, "depthwise_peak_gops": {}, "native_formats": ["fp32", "int8"]},
     "native_formats[1]: format 'int8' has no rate in peak_gops"),
    ({"native_formats": ["fp32"], "emulated_formats": ["fp32"]}, "emulated_formats: format 'fp32' is also in native_formats"),
], ids=["unknown-backend", "backend-not-a-name", "threads", "batch-too-large", "no-batch", "unknown-format",
        "duplicate", "not-in-peak-gops", "native-and-emulated"])
def test_profile_backend_and_formats_refused_in_one_line_exit_2(tmp_path, over, expected):
    p = _bad_profile(tmp_path, **over)
    msg = refused(p)
    assert expected in msg and "bad_hw/profile.yaml: " in msg, msg  # the file, the field, the value
    code, err = cli("validate", str(p), cwd=tmp_path)
    assert code == 2 and expected in err
