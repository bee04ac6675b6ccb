"""State that concurrent runs share, and state files that fail in one line.

1. the ledger of true evaluations, shared by concurrent searches through one cache folder (real
   processes): every evaluation stored once, the first value wins, readers never see half a row;
2. unique temp names: concurrent trainings publishing into one folder do not collide;
3. the supernet's weights and record published as a pair, checked when read; a full disk while
   saving leaves the previous pair loadable and no temp file behind;
4. a corrupt ``ledger.csv``, ``search_state.json`` or ``front.json`` is one line naming the file
   (also through the CLI: exit 2);
5. ``--resume`` refuses, before anything reaches the shared ledger, a checkpoint of another
   supernet or with values that are not top-1s or specs that are not subnets of the space.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import multiprocessing
import resource
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasq.errors import ConfigError, NasqError
from nasq.search.ledger import Ledger
from nasq.search.pareto import FRONT_JSON, Front, FrontPoint
from nasq.search.state import STATE_FILE, SearchState
from nasq.space import SearchSpace, SubnetSpec
from nasq.testing.faults import record

REPO = Path(__file__).resolve().parents[2]
SPACE_YAML = REPO / "search_spaces" / "mbconv_small.yaml"
SPAWN = multiprocessing.get_context("spawn")


def _one_line(err: BaseException, *needles: str) -> str:
    text = str(err)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def _specs(space: SearchSpace, n: int, seed: int = 0) -> list[SubnetSpec]:
    return space.sample_unique(np.random.default_rng(seed), n, set())


def _top1_of(key: str) -> float:
    """A deterministic fake top-1 in [0, 100) with a long decimal expansion (exact round trip)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10_000_000 / 100_000 + 1 / 3


def _fake(specs: list[SubnetSpec]) -> list[float]:
    return [_top1_of(s.key()) for s in specs]


def _rows(path: Path) -> list[list[str]]:
    import csv

    return list(csv.reader(path.read_text().splitlines()))


# ================================================================ 1. the shared ledger
def _searcher(cache: str, identity: str, spec_dicts: list[dict], writer: int, barrier, out: str) -> None:
    """One search: evaluates its subnets in batches of 4 through the shared cache; the fake
    evaluator's values say which process measured them (10 * (writer + 1) + a fraction)."""
    specs = [SubnetSpec.from_dict(d) for d in spec_dicts]
    evaluated: list[str] = []

    def evaluate(batch: list[SubnetSpec]) -> list[float]:
        time.sleep(0.003 * len(batch))  # long enough for the processes to interleave
        evaluated.extend(s.key() for s in batch)
        return [10.0 * (writer + 1) + (_top1_of(s.key()) % 1) for s in batch]

    ledger = Ledger.in_cache(evaluate, cache, identity, {"test": "shared"})
    barrier.wait()
    seen: dict[str, float] = {}
    for i in range(0, len(specs), 4):
        batch = specs[i:i + 4]
        seen.update({s.key(): float(v) for s, v in zip(batch, ledger(batch, f"w{writer}"), strict=True)})
    Path(out).write_text(json.dumps({"seen": seen, "evaluated": evaluated}))


def _reader(path: str, stop: str, out: str) -> None:
    """Reads the ledger over and over while it is written: it must always parse."""
    reads, keys = 0, 0
    while not Path(stop).exists():
        if Path(path).exists():
            keys = len(Ledger(lambda s: [], path))  # the searchers read theirs incrementally
            reads += 1
    Path(out).write_text(json.dumps({"reads": reads, "keys": keys}))


def _run_beside_reader(workers: list, reader, stop: Path, timeout: float) -> list[int | None]:
    """Start ``reader``, then ``workers``; once they end, touch ``stop`` for the reader. Returns
    the workers' exit codes, then the reader's."""
    reader.start()
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout)
    stop.touch()
    reader.join(60)
    return [p.exitcode for p in workers] + [reader.exitcode]


def test_concurrent_searches_share_the_ledger(space, tmp_path):
    """3 searches with overlapping subnets through one cache folder, and a reader: the union of
    their keys is in the ledger, each once, every search got the value that was written first,
    and the reader never saw a half row."""
    specs = _specs(space, 32)
    identity = "ab" * 32
    sets = [specs[0:16], specs[8:24], specs[16:32]]
    barrier = SPAWN.Barrier(3)
    stop = tmp_path / "stop"
    path = tmp_path / "cache" / identity[:16] / "ledger.csv"
    reader = SPAWN.Process(target=_reader, args=(str(path), str(stop), str(tmp_path / "reader.json")))
    procs = [SPAWN.Process(target=_searcher, args=(str(tmp_path / "cache"), identity, [s.to_dict() for s in chunk],
                                                  w, barrier, str(tmp_path / f"w{w}.json")))
             for w, chunk in enumerate(sets)]
    assert _run_beside_reader(procs, reader, stop, 120) == [0, 0, 0, 0]

    rows = _rows(path)[1:]
    keys = [r[0] for r in rows]
    record("3 searches sharing one ledger cache (+ a reader), spawned processes", subnets_asked=32,
           ledger_rows=len(keys), ledger_unique=len(set(keys)),
           reader_saw=json.loads((tmp_path / "reader.json").read_text())["keys"])
    assert len(keys) == len(set(keys)), "an evaluation was written twice"
    assert set(keys) == {s.key() for s in specs}, "an evaluation was lost"
    stored = Ledger(lambda s: [], path).top1
    for w, chunk in enumerate(sets):
        got = json.loads((tmp_path / f"w{w}.json").read_text())
        assert got["seen"] == {s.key(): stored[s.key()] for s in chunk}  # exact: the first writer's value
    for key, value in stored.items():  # the value is from a search that had that subnet
        writer = int(value // 10) - 1
        assert key in {s.key() for s in sets[writer]}
    assert json.loads((tmp_path / "reader.json").read_text())["keys"] == 32


def test_ledger_rereads_before_each_batch_and_first_value_wins(space, tmp_path):
    specs = _specs(space, 6)
    a = Ledger.in_cache(_fake, tmp_path, "cd" * 32, {})
    b_calls: list[str] = []
    b = Ledger.in_cache(lambda batch: (b_calls.extend(s.key() for s in batch), [99.0] * len(batch))[1],
                        tmp_path, "cd" * 32, {})
    a(specs[:4], "a")
    assert list(b(specs[:4], "b")) == _fake(specs[:4]) and b_calls == []  # read, not evaluated again
    b.record(specs[4], 12.5, "elsewhere")
    a.record(specs[4], 77.0, "elsewhere")
    b.save()
    a.save()  # specs[4] is in the file already: a adopts the first value, writes nothing
    assert a.top1[specs[4].key()] == 12.5
    rows = _rows(a.path)[1:]
    assert [r[0] for r in rows] == [s.key() for s in specs[:5]]
    assert Ledger(_fake, a.path).values([s.key() for s in specs[:4]]).tolist() == _fake(specs[:4])  # exact


def test_ledger_torn_last_row_is_skipped_then_cut_off(space, tmp_path):
    """A writer killed mid-append leaves an incomplete last line: readers skip it, the next writer
    cuts it off before appending (a row counts once its newline is written)."""
    specs = _specs(space, 4)
    path = tmp_path / "ledger.csv"
    Ledger(_fake, path)(specs[:2], "a")
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[1][:25])  # a torn third row
    again = Ledger(_fake, path)
    assert len(again) == 2
    again(specs[2:], "b")
    assert [r[0] for r in _rows(path)[1:]] == [s.key() for s in specs]
    assert len(Ledger(_fake, path)) == 4


def _append_on_a_full_disk(path: str, spec_dicts: list[dict]) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit raise EFBIG instead
    ledger = Ledger(_fake, path)
    size = Path(path).stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        ledger([SubnetSpec.from_dict(d) for d in spec_dicts], "full")
    except NasqError as e:
        raise SystemExit(0 if "could not append" in str(e) and "\n" not in str(e) else 3) from e
    raise SystemExit(4)


def test_ledger_append_on_a_full_disk_leaves_no_half_row(space, tmp_path):
    specs = _specs(space, 8)
    path = tmp_path / "ledger.csv"
    Ledger(_fake, path)(specs[:2], "a")
    before = path.read_bytes()
    child = SPAWN.Process(target=_append_on_a_full_disk, args=(str(path), [s.to_dict() for s in specs[2:]]))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert path.read_bytes() == before  # the part that fitted was cut off again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.csv", "ledger.csv.lock"]


# ================================================================ 4. corrupt ledger.csv
def _ledger_text(space: SearchSpace) -> tuple[str, list[str]]:
    spec = _specs(space, 1)[0]
    row = [spec.key(), "sample", "ok", repr(51.25), spec.to_json()]
    return spec.to_json(), row


def _csv_line(fields: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


HEADER = "key,origin,status,top1,spec\n"


def _corrupt_ledgers(space: SearchSpace) -> dict[str, tuple[bytes, str]]:
    spec_json, row = _ledger_text(space)
    good = (HEADER + _csv_line(row)).encode()
    other = _specs(space, 2, seed=1)[1]
    return {
        "empty": (b"", "line 1: no complete header line"),
        "truncated header": (b"key,origin,sta", "line 1: no complete header line"),
        "garbage": (b"\x00\x01\x02garbage\n\xff\xfe\n", "line 1:"),
        "not utf-8": (HEADER.encode() + b"\xff\xfe\xfd,\xc3\x28\n", "line 2: not UTF-8"),
        "wrong columns": (b"name,value\nx,1\n", "line 1: not a nasq ledger"),
        "short row": (good + b"abc,sample\n", "line 3: expected 5 fields, got 2"),
        "nan top1": ((HEADER + _csv_line([*row[:3], "nan", row[4]])).encode(), "line 2: top1 must be a number in [0, 100]"),
        "inf top1": ((HEADER + _csv_line([*row[:3], "inf", row[4]])).encode(), "line 2: top1 must be"),
        "top1 out of range": ((HEADER + _csv_line([*row[:3], "151.0", row[4]])).encode(), "line 2: top1 must be"),
        "bad status": ((HEADER + _csv_line([*row[:2], "maybe", *row[3:]])).encode(), "line 2: status must be"),
        "spec not json": ((HEADER + _csv_line([*row[:4], "{stages"])).encode(), "line 2: spec is not JSON"),
        "spec does not decode": ((HEADER + _csv_line([*row[:4], '{"stages": 3}'])).encode(), "line 2: spec does not decode"),
        "key not its spec": ((HEADER + _csv_line([other.key(), *row[1:]])).encode(), "line 2: key "),
    }


@pytest.mark.parametrize("case", ["empty", "truncated header", "garbage", "not utf-8", "wrong columns", "short row",
                                  "nan top1", "inf top1", "top1 out of range", "bad status", "spec not json",
                                  "spec does not decode", "key not its spec"])
def test_corrupt_ledger_is_one_line(space, tmp_path, case):
    data, expected = _corrupt_ledgers(space)[case]
    folder = tmp_path / ("ef" * 8)
    folder.mkdir()
    (folder / "identity.json").write_text(json.dumps({"identity": "ef" * 32}))
    (folder / "ledger.csv").write_bytes(data)
    with pytest.raises(ConfigError) as err:
        Ledger.in_cache(_fake, tmp_path, "ef" * 32, {})
    _one_line(err.value, f"{folder / 'ledger.csv'}: {expected}")


def test_corrupt_identity_file_is_one_line(tmp_path):
    (tmp_path / ("ef" * 8)).mkdir()
    (tmp_path / ("ef" * 8) / "identity.json").write_bytes(b"\xff{")
    with pytest.raises(ConfigError) as err:
        Ledger.in_cache(_fake, tmp_path, "ef" * 32, {})
    _one_line(err.value, "identity.json: not valid JSON")


# ================================================================ 4. corrupt search_state.json
def _saved_state(space: SearchSpace, folder: Path) -> dict:
    state = SearchState("random", 0, fingerprint="fp")
    specs = _specs(space, 3)
    state.add(specs, np.array([50.5, math.nan, 70.25]), None)
    state.iteration = 1
    state.save(folder)
    return json.loads((folder / STATE_FILE).read_text())


def _bad_space_spec(space: SearchSpace, spec: SubnetSpec) -> dict:
    """``spec`` with one kernel the space does not offer (its key made to match)."""
    d = spec.to_dict()
    d["stages"][0][0]["kernel"] = 9
    return {"spec": d, "key": SubnetSpec.from_dict(d).key()}


STATE_CASES = {
    "truncated": (lambda raw, s: raw[: len(raw) // 2], "not valid JSON"),
    "garbage": (lambda raw, s: b"\x00garbage\x01", "not valid JSON"),
    "not utf-8": (lambda raw, s: b'{"format": "\xff\xfe"}', "not valid JSON"),
    "a list": (lambda raw, s: b"[1, 2]", "expected a JSON object, got list"),
    "wrong format": (lambda raw, s: _edit(raw, format="other/1"), "format: not a nasq search checkpoint"),
    "wrong shape": (lambda raw, s: _edit(raw, evaluations={"a": 1}), "evaluations: Input should be a valid list"),
    "missing field": (lambda raw, s: _edit(raw, history=None, drop="history"), "history: required field is missing"),
    "nan top1": (lambda raw, s: _edit_eval(raw, 0, top1=math.nan), "evaluations[0].top1: Input should be a finite number"),
    "inf top1": (lambda raw, s: _edit_eval(raw, 2, top1=math.inf), "evaluations[2].top1: Input should be a finite number"),
    "top1 > 100": (lambda raw, s: _edit_eval(raw, 0, top1=150.0), "evaluations[0].top1: Input should be less than or equal to 100"),
    "spec does not decode": (lambda raw, s: _edit_eval(raw, 1, spec={"stages": 3}), "evaluations[1].spec: does not decode"),
    "key not its spec": (lambda raw, s: _edit_eval(raw, 1, key="k3.int8.int8"), "evaluations[1].key: 'k3.int8.int8' is not the key"),
    "duplicate key": (lambda raw, s: _dup(raw), "evaluations[3].key: "),
    "spec not in the space": (lambda raw, s: _edit_eval(raw, 0, **_bad_space_spec(s, SubnetSpec.from_dict(json.loads(raw)["evaluations"][0]["spec"]))),
                              "evaluations[0].spec: does not decode in space 'mbconv_small'"),
}


def _edit(raw: bytes, drop: str | None = None, **fields) -> bytes:
    data = json.loads(raw)
    data.update(fields)
    if drop:
        del data[drop]
    return json.dumps(data).encode()


def _edit_eval(raw: bytes, i: int, **fields) -> bytes:
    data = json.loads(raw)
    data["evaluations"][i].update(fields)
    return json.dumps(data).encode()


def _dup(raw: bytes) -> bytes:
    data = json.loads(raw)
    data["evaluations"].append(data["evaluations"][0])
    return json.dumps(data).encode()


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_corrupt_search_state_is_one_line(space, tmp_path, case):
    _saved_state(space, tmp_path)
    path = tmp_path / STATE_FILE
    corrupt, expected = STATE_CASES[case]
    path.write_bytes(corrupt(path.read_bytes(), space))
    with pytest.raises(NasqError) as err:
        SearchState.load(tmp_path, "fp", space)
    _one_line(err.value, f"{path}: ", expected)


def test_search_state_round_trip(space, tmp_path):
    saved = _saved_state(space, tmp_path)
    state = SearchState.load(tmp_path, "fp", space)
    assert state.keys == [e["key"] for e in saved["evaluations"]] and state.iteration == 1
    assert state.top1[state.keys[0]] == 50.5 and math.isnan(state.top1[state.keys[1]])


# ================================================================ 4. corrupt front.json
def _front(space: SearchSpace) -> Front:
    specs = _specs(space, 3, seed=2)
    points = [FrontPoint(s, [int(g) for g in space.encode(s)],
                         {"top1": math.nan if i == 0 else 50.0 - i, "latency_ms": 1.0 + i, "size_mb": 0.1 * (i + 1)},
                         {"top1": 49.0 - i}) for i, s in enumerate(specs)]
    return Front(("top1", "latency_ms", "size_mb"), points, {"space": space.hash})


def _edit_point(raw: bytes, i: int, part: str | None = None, **fields) -> bytes:
    data = json.loads(raw)
    (data["points"][i][part] if part else data["points"][i]).update(fields)
    return json.dumps(data).encode()


FRONT_CASES = {
    "truncated": (lambda raw, s: raw[: len(raw) // 2], "not valid JSON"),
    "garbage": (lambda raw, s: b"\x00\x01garbage", "not valid JSON"),
    "not utf-8": (lambda raw, s: b'{"points": "\xff"}', "not valid JSON"),
    "a list": (lambda raw, s: b"[]", "expected a JSON object, got list"),
    "wrong shape": (lambda raw, s: _edit(raw, points=3), "points: Input should be a valid list"),
    "unknown key": (lambda raw, s: _edit_point(raw, 0, colour="red"), "points[0].colour: unknown key"),
    "unknown objective": (lambda raw, s: _edit(raw, objectives=["top1", "speed"]), "objectives: unknown objective 'speed'"),
    "nan measured top1": (lambda raw, s: _edit_point(raw, 1, "measured", top1=math.nan), "points[1].measured.top1: must be a finite number"),
    "inf latency": (lambda raw, s: _edit_point(raw, 2, "predicted", latency_ms=math.inf), "points[2].predicted.latency_ms: must be a finite number"),
    "top1 > 100": (lambda raw, s: _edit_point(raw, 0, "measured", top1=101.0), "points[0].measured.top1: must be a top-1 in [0, 100]"),
    "no objective value": (lambda raw, s: _edit_point(raw, 0, measured={}), "points[0]: no measured or predicted value for objective 'top1'"),
    "spec does not decode": (lambda raw, s: _edit_point(raw, 1, spec={"stages": [[{"kernel": 3}]]}), "points[1].spec: does not decode"),
    "key not its spec": (lambda raw, s: _edit_point(raw, 1, key="nope"), "points[1].key: 'nope' is not the key"),
}


@pytest.mark.parametrize("case", list(FRONT_CASES))
def test_corrupt_front_is_one_line(space, tmp_path, case):
    _front(space).save(tmp_path)
    path = tmp_path / FRONT_JSON
    corrupt, expected = FRONT_CASES[case]
    path.write_bytes(corrupt(path.read_bytes(), space))
    with pytest.raises(ConfigError) as err:
        Front.load(path)
    _one_line(err.value, f"{path}: ", expected)


def test_front_round_trip(space, tmp_path):
    front = _front(space)
    front.save(tmp_path)
    again = Front.load(tmp_path / FRONT_JSON)
    assert again.to_dict().keys() == front.to_dict().keys()
    assert [p.spec for p in again.points] == [p.spec for p in front.points]
    assert math.isnan(again.points[0].predicted["top1"])  # not predicted: NaN is allowed there


# ---------------------------------------------------------------- through the CLI
TINY = {"name": "unit", "data": {"name": "digits", "val_size": 100}, "space": "mbconv_small",
        "hardware": ["cpu_roofline"], "evaluate": {"num_subnets": 8, "calib_images": 64, "val_images": 100, "batch_size": 100},
        "search": {"strategy": "random", "max_true_evals": 6, "batch_size": 3, "seed": 0},
        "ray": {"address": "none"}, "export": {"enabled": False}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run folder as the pipeline leaves it, with an untrained supernet (saved as a pair)."""
    import torch

    from nasq.experiment import load_experiment
    from nasq.files import atomic_write_json
    from nasq.stages.track import run_record
    from nasq.supernet import checkpoint
    from nasq.supernet.network import Supernet

    tmp = tmp_path_factory.mktemp("run")
    exp_file = tmp / "unit.yaml"
    exp_file.write_text(yaml.safe_dump({**TINY, "workdir": str(tmp / "runs" / "unit")}))
    exp = load_experiment(exp_file)
    folder = exp.workdir
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    checkpoint.save(Supernet(exp.space), folder, {"space": exp.space.name, "space_hash": exp.space.hash,
                                                  "result": {"steps": 0}})
    _front(exp.space).save(folder)
    atomic_write_json(folder / "experiment.json", run_record(exp))
    return exp_file, folder


def _cli(*args: str):
    from typer.testing import CliRunner

    from nasq.cli import app

    return CliRunner().invoke(app, list(args))


def _cli_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasq: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("case", ["truncated", "not utf-8", "wrong shape", "nan measured top1", "spec does not decode"])
def test_cli_front_and_export_on_a_corrupt_front(finished_run, tmp_path, case):
    _, folder = finished_run
    path = folder / FRONT_JSON
    good = path.read_bytes()
    corrupt, expected = FRONT_CASES[case]
    try:
        path.write_bytes(corrupt(good, None))
        line = _cli_error(_cli("front", str(folder)))
        assert f"{path}: " in line and expected in line, line
        line = _cli_error(_cli("export", str(folder), "--point", "0", "--out", str(tmp_path / "out")))
        assert f"{path}: " in line and expected in line, line
        assert not (tmp_path / "out").exists()
    finally:
        path.write_bytes(good)


def test_cli_front_refuses_a_point_outside_the_runs_space(space, finished_run):
    _, folder = finished_run
    path = folder / FRONT_JSON
    good = path.read_bytes()
    try:
        path.write_bytes(_edit_point(good, 2, **_bad_space_spec(space, _front(space).points[2].spec)))
        line = _cli_error(_cli("front", str(folder)))
        assert f"{path}: points[2].spec: does not decode in space 'mbconv_small'" in line, line
    finally:
        path.write_bytes(good)
    assert _cli("front", str(folder)).exit_code == 0


def test_cli_search_on_a_corrupt_ledger_and_a_corrupt_checkpoint(finished_run, tmp_path):
    """`nasq search` on a cache whose ledger.csv is corrupt, and `--resume` of a search_state.json
    with a NaN top1: one line naming the file, exit 2."""
    from nasq.experiment import load_experiment
    from nasq.stages import evaluate

    exp_file, folder = finished_run
    ledger = evaluate.open_ledger(load_experiment(exp_file), _fake, folder)
    ledger.path.write_bytes(b"key,origin,status,top1,spec\nx,sample,ok,0.5\n")
    try:
        line = _cli_error(_cli("search", str(exp_file), "--quiet"))
        assert f"{ledger.path}: line 2: expected 5 fields, got 4" in line, line
    finally:
        ledger.path.unlink()
    part = tmp_path / "part"
    part.mkdir()
    _saved_state(load_experiment(exp_file).space, part)
    (part / STATE_FILE).write_bytes(_edit_eval((part / STATE_FILE).read_bytes(), 0, top1=math.nan))
    line = _cli_error(_cli("search", str(exp_file), "--resume", str(part), "--quiet"))
    assert f"{part / STATE_FILE}: evaluations[0].top1: Input should be a finite number" in line, line


# ================================================================ 5. --resume and the shared ledger
@pytest.fixture
def search_setup(tmp_path):
    """An experiment and a search interrupted after its first iteration, its evaluations in the
    cache of identity 'aa..'."""
    from nasq.experiment import load_experiment
    from nasq.stages import search
    from nasq.stages.evaluate import Samples

    exp_file = tmp_path / "s.yaml"
    exp_file.write_text(yaml.safe_dump({**TINY, "workdir": str(tmp_path / "run")}))
    exp = load_experiment(exp_file)
    calls = {"n": 0}

    def dies_on_second_batch(specs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return _fake(specs)

    workdir = tmp_path / "out"
    workdir.mkdir()
    cache = tmp_path / "cache"
    ledger = Ledger.in_cache(dies_on_second_batch, cache, "aa" * 32, {})
    with pytest.raises(KeyboardInterrupt):
        search.run(exp, search.SearchUpstream(ledger, Samples([], np.zeros(0), "")), workdir)
    assert len(json.loads((workdir / STATE_FILE).read_text())["evaluations"]) == 3

    def resume(identity: str, evaluate=_fake):
        led = Ledger.in_cache(evaluate, cache, identity, {})
        return search.run(exp, search.SearchUpstream(led, Samples([], np.zeros(0), "")), workdir, resume=True), led

    return workdir, cache, resume


def _ledger_bytes(cache: Path, identity: str) -> bytes:
    path = cache / identity[:16] / "ledger.csv"
    return path.read_bytes() if path.exists() else b""


def test_resume_on_another_supernets_ledger_is_refused(search_setup):
    workdir, cache, resume = search_setup
    with pytest.raises(NasqError) as err:
        resume("bb" * 32)
    _one_line(err.value, f"{workdir / STATE_FILE}: 3 of its 3 evaluations are not in the ledger",
              "start a new search instead of --resume")
    assert _ledger_bytes(cache, "bb" * 32) == b""  # nothing of the resumed search was written there


@pytest.mark.parametrize("case, edit, expected", [
    ("out of range", {"top1": 150.0}, "evaluations[0].top1: Input should be less than or equal to 100"),
    ("nan", {"top1": math.nan}, "evaluations[0].top1: Input should be a finite number"),
    ("another value", {"top1": 1.5}, "top1 of "),
    ("not in the space", None, "evaluations[0].spec: does not decode in space 'mbconv_small'"),
])
def test_resume_with_values_the_ledger_cannot_vouch_for_is_refused(space, search_setup, case, edit, expected):
    workdir, cache, resume = search_setup
    path = workdir / STATE_FILE
    raw = path.read_bytes()
    if edit is None:
        edit = _bad_space_spec(space, SubnetSpec.from_dict(json.loads(raw)["evaluations"][0]["spec"]))
    path.write_bytes(_edit_eval(raw, 0, **edit))
    before = _ledger_bytes(cache, "aa" * 32)
    with pytest.raises(NasqError) as err:
        resume("aa" * 32)
    _one_line(err.value, str(path), expected)
    assert _ledger_bytes(cache, "aa" * 32) == before


def test_resume_on_its_own_ledger_continues(search_setup):
    workdir, cache, resume = search_setup
    asked: list[str] = []
    outcome, ledger = resume("aa" * 32, lambda specs: (asked.extend(s.key() for s in specs), _fake(specs))[1])
    assert outcome.state.true_evals == 6 and len(asked) == 3  # only the unfinished iteration ran
    rows = _rows(ledger.path)[1:]
    assert len(rows) == len({r[0] for r in rows}) == 6


# ================================================================ 2./3. the supernet checkpoint
def _tagged_net(space: SearchSpace, tag: int):
    import torch

    from nasq.supernet.network import Supernet

    net = Supernet(space)
    with torch.no_grad():
        net.stem.weight.fill_(float(tag))
    return net


def _publisher(folder: str, first_tag: int, rounds: int) -> None:
    from nasq.supernet import checkpoint

    space = SearchSpace.from_yaml(SPACE_YAML)
    for i in range(rounds):
        tag = first_tag + 2 * i
        checkpoint.save(_tagged_net(space, tag), Path(folder), {"space": space.name, "space_hash": space.hash,
                                                                "tag": tag})


def _pair_reader(folder: str, stop: str, out: str) -> None:
    from nasq.supernet import checkpoint

    space = SearchSpace.from_yaml(SPACE_YAML)
    reads = 0
    while not Path(stop).exists():
        net, rec = checkpoint.load(Path(folder), space)
        if float(net.stem.weight.detach().flatten()[0]) != rec["tag"]:
            raise SystemExit(f"weights of {float(net.stem.weight.detach().flatten()[0])} with the record of {rec['tag']}")
        reads += 1
    Path(out).write_text(str(reads))


def test_concurrent_publishers_and_a_reader_see_matching_pairs(space, tmp_path):
    """Two trainings publish their supernet into one folder over and over while another process
    reads it: no temp name collides, and every read gets weights and record of the same save."""
    from nasq.supernet import checkpoint

    folder = tmp_path / "run"
    folder.mkdir()
    _publisher(str(folder), -2, 1)
    stop = tmp_path / "stop"
    reader = SPAWN.Process(target=_pair_reader, args=(str(folder), str(stop), str(tmp_path / "reads")))
    writers = [SPAWN.Process(target=_publisher, args=(str(folder), w, 40)) for w in (0, 1)]
    assert _run_beside_reader(writers, reader, stop, 180) == [0, 0, 0]
    assert int((tmp_path / "reads").read_text()) > 0
    _, rec = checkpoint.load(folder, space)
    assert rec["tag"] in (78, 79)
    assert sorted(p.name for p in folder.iterdir()) == [".supernet.lock", "supernet.json", "supernet.safetensors"]


def test_a_torn_pair_is_refused_in_one_line(space, tmp_path):
    from nasq.supernet import checkpoint

    checkpoint.save(_tagged_net(space, 1), tmp_path, {"space": space.name, "space_hash": space.hash, "tag": 1})
    record = (tmp_path / checkpoint.RECORD).read_bytes()
    checkpoint.save(_tagged_net(space, 2), tmp_path, {"space": space.name, "space_hash": space.hash, "tag": 2})
    (tmp_path / checkpoint.RECORD).write_bytes(record)  # as if killed between the two renames
    with pytest.raises(checkpoint.TornPair) as err:
        checkpoint.load(tmp_path, space)
    _one_line(err.value, f"{tmp_path / checkpoint.WEIGHTS}: sha256 ", "train again")


def test_a_record_without_weights_sha256_still_loads(space, tmp_path):
    """Supernets saved before the record named its weights stay usable."""
    from nasq.supernet import checkpoint

    checkpoint.save(_tagged_net(space, 3), tmp_path, {"space": space.name, "space_hash": space.hash, "tag": 3})
    record = json.loads((tmp_path / checkpoint.RECORD).read_text())
    del record[checkpoint.WEIGHTS_SHA256]
    (tmp_path / checkpoint.RECORD).write_text(json.dumps(record))
    net, loaded = checkpoint.load(tmp_path, space)
    assert float(net.stem.weight.detach().flatten()[0]) == 3.0 and loaded["tag"] == 3


def _save_on_a_full_disk(folder: str) -> None:
    import torch

    from nasq.supernet import checkpoint

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, writes fail with EFBIG
    bigger = torch.nn.Linear(1024, 1024)  # 4 MiB of weights, far more than the limit below
    limit = (Path(folder) / checkpoint.WEIGHTS).stat().st_size + 4096
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        checkpoint.save(bigger, Path(folder), {"space": "x", "space_hash": "y", "tag": 99})
    except OSError as e:
        raise SystemExit(0 if e.errno == errno.EFBIG else 3) from e
    raise SystemExit(4)


def test_disk_full_while_saving_keeps_the_previous_supernet(space, tmp_path):
    from nasq.supernet import checkpoint

    checkpoint.save(_tagged_net(space, 5), tmp_path, {"space": space.name, "space_hash": space.hash, "tag": 5})
    child = SPAWN.Process(target=_save_on_a_full_disk, args=(str(tmp_path),))
    child.start()
    child.join(120)
    assert child.exitcode == 0, "the save did not fail with EFBIG"
    net, rec = checkpoint.load(tmp_path, space)
    left = sorted(p.name for p in tmp_path.iterdir())
    record("disk full (RLIMIT_FSIZE) while saving a supernet over a previous one",
           previous_loads=rec["tag"] == 5, files_left=" ".join(left))
    assert rec["tag"] == 5 and float(net.stem.weight.detach().flatten()[0]) == 5.0
    assert left == [".supernet.lock", "supernet.json", "supernet.safetensors"]


def _training_checkpoints(folder: str, rounds: int) -> None:
    import torch

    from nasq.specs import TrainConfig
    from nasq.supernet.network import Supernet
    from nasq.supernet.train import save_checkpoint

    space = SearchSpace.from_yaml(SPACE_YAML)
    net = Supernet(space)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for step in range(rounds):
        save_checkpoint(net, opt, Path(folder), TrainConfig(), space, step, rounds, [1.0] * step)


def test_concurrent_training_checkpoints_use_their_own_temp_names(space, tmp_path):
    import torch

    from nasq.specs import TrainConfig
    from nasq.supernet.network import Supernet
    from nasq.supernet.train import CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, load_checkpoint

    procs = [SPAWN.Process(target=_training_checkpoints, args=(str(tmp_path), 60)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_STATE, CHECKPOINT_WEIGHTS])
    net = Supernet(space)
    step, losses = load_checkpoint(net, torch.optim.SGD(net.parameters(), lr=0.1), tmp_path, TrainConfig(), space)
    assert step == 59 and losses == [1.0] * 59


def test_temp_names_are_unique_and_recognisable(tmp_path):
    """Two writers of one file get different temp names; a leftover temp names its target (so a
    folder nasq cleans up can tell it from a stranger's file)."""
    from nasq.files import temp_target, write_beside

    a, b = write_beside(tmp_path / "supernet.json", b"a"), write_beside(tmp_path / "supernet.json", b"b")
    assert a != b and a.read_bytes() == b"a" and b.read_bytes() == b"b"
    assert temp_target(a.name) == temp_target(b.name) == "supernet.json"
    assert temp_target("supernet.json") is None and temp_target("supernet.json.tmp") is None
