"""Does a measured profile hold on *this* machine? ``nasq profile check`` and ``nasq profile calibrate``.

A shipped profile (``hardware_profiles/<name>/``) was measured on one host. Another machine of
the same kind can run every subnet uniformly slower (a lower clock, another memory system) while
still ranking them alike, or rank them differently (another ISA, another runtime version). The
search only needs the ranking and the latency budget; both are checked here in seconds:

* :func:`check_profile` times ``K`` reference subnets (:func:`reference_specs`) with the profile's
  backend (its ``load_model`` / ``time_model_ms``) and thread count and compares them with the profile's predictor: the speed factor
  (median measured / predicted), Kendall's tau, the share within +-10 % raw and after the factor,
  and a verdict (:func:`verdict`): ``holds``, ``scaled`` (ranking holds, the speed does not:
  ``nasq profile calibrate`` fixes it) or ``drifted`` (the ranking does not hold: measure again).
  The result goes to a per-user cache (:func:`cache_path`), never into the catalog.
* :func:`calibrate_profile` times ``N`` whole subnets, refits the predictor's correction on the
  profile's own table, and writes a calibrated copy of the profile folder (by default
  ``./hardware_profiles/<name>_<host>``, so the catalog finds it by name; the original is never
  touched), all at once (a temp folder renamed into place).
* :func:`drift_note` turns the cache (or a CPU that differs from the one the profile was measured
  on) into one warning line for the search stage and the run report; it never raises.

torch and onnxruntime are imported only by the functions that time subnets.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nasq.errors import ConfigError, NasqError
from nasq.files import (
    atomic_write_json,
    cache_dir,
    json_bytes,
    read_json,
    short_hash,
    temp_target,
)
from nasq.hardware import HardwareProfile
from nasq.hardware.table import (
    LATENCY_CSV,
    MEASUREMENT_JSON,
    Calibration,
    LatencyTable,
    MeasurementInfo,
    load_measurement_info,
)
from nasq.predict.latency import LATENCY_MODEL_JSON, LatencyPredictor, load_profile_predictor
from nasq.space import SearchSpace, SubnetSpec
from nasq.specs import show

PROFILE_YAML = "profile.yaml"
PROFILE_FILES = (PROFILE_YAML, LATENCY_CSV, LATENCY_MODEL_JSON, MEASUREMENT_JSON)
VERDICTS = ("holds", "scaled", "drifted")
FACTOR_BAND = (0.9, 1.1)  # a speed factor inside it: the profile's absolute latencies hold here
MIN_TAU = 0.8  # Kendall tau below it: the profile no longer ranks subnets as this machine does
WITHIN = 0.10  # "within +-10 %"
CHECKS_DIR = "profile_checks"


# ---------------------------------------------------------------- this host and the cache
@dataclass(frozen=True)
class Host:
    node: str  # platform.node()
    cpu: str  # nasq.hardware.host.cpu_model()

    @property
    def key(self) -> str:
        return f"{self.node} | {self.cpu}"

    def slug(self) -> str:
        """The host name as a folder-name suffix (letters, digits, '.', '_', '-')."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.node).strip("-._")[:40] or "host"


def host_identity() -> Host:
    """This machine, as checks are keyed (tests replace this function to fake another host)."""
    from nasq.hardware.host import cpu_model

    return Host(platform.node() or "unknown", cpu_model())


def cache_path(profile_name: str, profile_hash: str) -> Path:
    """One file per profile version: a changed profile.yaml starts with no checks."""
    return cache_dir() / CHECKS_DIR / f"{profile_name}-{short_hash(profile_hash)}.json"


def cached_checks(profile_name: str, profile_hash: str) -> dict[str, dict[str, Any]]:
    """The cached checks of one profile by host key; empty when there is no (readable) cache: a
    cache is a convenience, a broken one is rewritten by the next check, never an error."""
    try:
        data = read_json(cache_path(profile_name, profile_hash))
    except (OSError, ValueError, RecursionError):
        return {}
    hosts = data.get("hosts") if isinstance(data, dict) else None
    return {k: v for k, v in hosts.items() if isinstance(v, dict)} if isinstance(hosts, dict) else {}


def store_check(result: dict[str, Any]) -> Path:
    """Record ``result`` (a :func:`check_profile` result) as this host's check of its profile."""
    name, digest = result["profile"], result["profile_hash"]
    hosts = cached_checks(name, digest)
    hosts[result["host"]["key"]] = result
    return atomic_write_json(cache_path(name, digest), {"profile": name, "profile_hash": digest, "hosts": hosts})


# ---------------------------------------------------------------- the profile as measured
def read_measurement(path: Path) -> tuple[MeasurementInfo, Calibration | None]:
    """measurement.json and the ``calibration`` entry a calibrated copy carries (None otherwise)."""
    info = load_measurement_info(path)
    return info, info.calibration


@dataclass
class Measured:
    """A measured profile resolved for checking: its files, settings and predictor for one space."""

    name: str
    yaml_path: Path
    profile: HardwareProfile
    info: MeasurementInfo
    calibration: Calibration | None
    space: SearchSpace
    predictor: LatencyPredictor

    @property
    def backend(self) -> str:
        # profile.yaml names its backend once profiles carry it; measurement.json always did.
        return self.profile.config.backend if self.profile.config.backend != "roofline" else self.info.backend


def load_measured(profile: str, space: str | None = None, base_dir: Path | None = None) -> Measured:
    """``profile``: a catalog name or a profile.yaml path; ``space``: a catalog name or YAML path,
    by default the first space the profile was measured for. ConfigError for a modelled profile."""
    from nasq.experiment import resolve

    base = base_dir or Path.cwd()
    yaml_path = resolve("hardware", profile, base, "command line", "PROFILE")
    loaded = HardwareProfile.from_yaml(yaml_path)
    info_path = yaml_path.parent / MEASUREMENT_JSON
    if loaded.config.status != "measured" or not (yaml_path.parent / LATENCY_CSV).is_file():
        raise ConfigError(str(yaml_path), "status", f"profile {show(loaded.name)} is modelled, not measured: "
                          "it has no latency table to check (measure one with `nasq profile measure`)")
    info, calibration = read_measurement(info_path)
    space_ref = space or info.spaces[0]
    space_path = resolve("space", space_ref, base, "command line", "--space")
    loaded_space = SearchSpace.from_yaml(space_path)
    predictor = load_profile_predictor(yaml_path, loaded_space)
    if predictor is None:  # unreachable after the checks above; kept for the type checker
        raise ConfigError(str(yaml_path), "", "no latency table")
    return Measured(loaded.name, yaml_path, loaded, info, calibration, loaded_space, predictor)


# ---------------------------------------------------------------- subnets and timing
def reference_specs(space: SearchSpace, k: int, seed: int = 0) -> list[SubnetSpec]:
    """``k`` distinct subnets covering the space's latency range: the smallest and the largest,
    then random subnets from ``seed`` that mix formats (what a search front holds). Deterministic."""
    specs = [space.smallest(), space.largest()][:k]
    rng = np.random.default_rng(seed)
    seen = {s.key() for s in specs}
    for spec in space.sample_unique(rng, 20 * k, exclude=seen):
        if len(specs) >= k:
            break
        if len(spec.formats_used()) > 1 or len(specs) + 1 == k:
            specs.append(spec)
            seen.add(spec.key())
    return specs


def time_subnets_ms(space: SearchSpace, specs: list[SubnetSpec], *, backend: str, threads: int,
                    warmup: int = 5, repeats: int = 50, rounds: int = 5, seed: int = 0,
                    progress: Any = None) -> np.ndarray:
    """Median milliseconds of each whole subnet on the profile's runtime, built and timed as the
    shipped correction was fitted (:func:`nasq.profiling.measure.time_subnets_ms`)."""
    from nasq.profiling.measure import time_subnets_ms as time_whole

    return time_whole(space, specs, backend=backend, threads=threads, warmup=warmup, repeats=repeats,
                      rounds=rounds, seed=seed, progress=progress)


# ---------------------------------------------------------------- scoring
def verdict(factor: float, tau: float | None) -> str:
    """``drifted`` when the ranking does not hold (tau < 0.8), else ``holds`` when the speed
    factor is within 0.9-1.1, else ``scaled``. An undefined tau (constant predictions) does not
    count against the profile."""
    if tau is not None and tau < MIN_TAU:
        return "drifted"
    return "holds" if FACTOR_BAND[0] <= factor <= FACTOR_BAND[1] else "scaled"


def score(predicted: np.ndarray, measured: np.ndarray) -> dict[str, Any]:
    """Speed factor, Kendall tau, share within +-10 % raw and after the factor, verdict."""
    from scipy.stats import kendalltau

    predicted, measured = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    ratio = measured / predicted
    factor = float(np.median(ratio))
    tau = float(kendalltau(predicted, measured).statistic) if len(ratio) >= 2 else math.nan
    tau_or_none = tau if math.isfinite(tau) else None
    return {"factor": round(factor, 4), "tau": None if tau_or_none is None else round(tau_or_none, 4),
            "within_10pct": round(float(np.mean(np.abs(ratio - 1) <= WITHIN)), 4),
            "within_10pct_scaled": round(float(np.mean(np.abs(ratio / factor - 1) <= WITHIN)), 4),
            "median_abs_error": round(float(np.median(np.abs(ratio - 1))), 4),
            "verdict": verdict(factor, tau_or_none)}


def advice(result: dict[str, Any]) -> str:
    name = result["profile"]
    return {"holds": "the profile's latency predictions hold on this machine",
            "scaled": f"rankings hold but every latency is off by the factor: run `nasq profile calibrate {name}`",
            "drifted": "this machine ranks subnets differently: measure a profile for it "
                       "(`nasq profile measure --out hardware_profiles/<name>`)"}[result["verdict"]]


def _now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _result(m: Measured, host: Host, specs: list[SubnetSpec], labels: list[str], predicted: np.ndarray,
            measured: np.ndarray, settings: dict[str, Any]) -> dict[str, Any]:
    rows = [{"label": label, "key": s.key(), "predicted_ms": round(float(p), 5), "measured_ms": round(float(t), 5),
             "ratio": round(float(t / p), 4)} for label, s, p, t in zip(labels, specs, predicted, measured, strict=True)]
    out = {"profile": m.name, "profile_hash": m.profile.hash, "space": m.space.name, "space_hash": m.space.hash,
           "host": {"key": host.key, "node": host.node, "cpu": host.cpu}, "checked_at": _now(),
           "backend": m.backend, "threads": m.info.threads, **settings, "subnets": rows,
           **score(predicted, measured)}
    out["advice"] = advice(out)
    return out


def check_profile(profile: str, *, space: str | None = None, subnets: int = 8, seed: int = 0, repeats: int = 50,
                  warmup: int = 5, rounds: int = 5, progress: Any = None, store: bool = True,
                  base_dir: Path | None = None) -> dict[str, Any]:
    """Time :func:`reference_specs` on this machine against the profile's predictor; returns the
    JSON-ready result (and, with ``store``, records it in the per-user cache)."""
    m = load_measured(profile, space, base_dir)
    specs = reference_specs(m.space, subnets, seed)
    labels = (["smallest", "largest"] + [f"random {i + 1}" for i in range(len(specs) - 2)])[:len(specs)]
    predicted = m.predictor.predict(specs)
    if not np.isfinite(predicted).all():
        raise NasqError(f"profile {m.name} cannot run every reference subnet of {m.space.name} (unsupported rows)")
    measured = time_subnets_ms(m.space, specs, backend=m.backend, threads=m.info.threads, warmup=warmup,
                               repeats=repeats, rounds=rounds, seed=seed, progress=progress)
    result = _result(m, host_identity(), specs, labels, predicted, measured,
                     {"seed": seed, "repeats": repeats, "warmup": warmup, "rounds": rounds, "source": "check"})
    _note_int8_storage(result, m)
    if store:
        result["cache"] = str(store_check(result))
    return result


def _note_int8_storage(result: dict[str, Any], m: Measured) -> None:
    """Record which int8 weight storage the profile timed and which this machine's lowering used
    (``int8_weights``); when both are known and differ, the advice says so: the two run different
    onnxruntime kernels, so a gap between them is not this machine's speed alone."""
    from nasq.profiling.backend import get_backend

    here = get_backend(m.backend).int8_weight_storage()
    result["int8_weights"] = {"profile": m.info.int8_weights, "here": here}
    if m.info.int8_weights is not None and here is not None and m.info.int8_weights != here:
        result["advice"] += (f" (the profile timed integer kernels with {m.info.int8_weights} weights, this "
                             f"machine's export stores {here}: different kernels, see export.int8_weights)")


# ---------------------------------------------------------------- calibrate
def default_calibrated_dir(name: str, host: Host, base_dir: Path | None = None) -> Path:
    """``./hardware_profiles/<name>_<host>``: beside the user's own catalog, found by name; a
    profile already calibrated for this host is recalibrated in its own folder."""
    suffix = f"_{host.slug()}"
    base = name if name.endswith(suffix) else f"{name}{suffix}"
    return (base_dir or Path.cwd()) / "hardware_profiles" / base[:100]


def _calibrated_yaml(original: Path, name: str, source_name: str, host: Host) -> str:
    doc = yaml.safe_load(original.read_text(encoding="utf-8"))
    doc["name"] = name
    header = (f"# Calibrated by `nasq profile calibrate {source_name}` on {host.node} ({host.cpu}), {_now()}:\n"
              f"# the table is {source_name}'s, latency_model.json was refitted on whole subnets timed here\n"
              "# (see measurement.json's calibration). Do not edit by hand; calibrate again.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def _check_own_folder(out: Path) -> None:
    """``out`` is absent, or a real folder holding only profile files (or a killed writer's temp
    files): what a calibration may replace. Anything else is refused before any write."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise NasqError(f"{out}: not a profile folder (it is a {'symlink' if out.is_symlink() else 'file'}); "
                        "choose another --out")
    for entry in out.iterdir():
        own = entry.name in PROFILE_FILES or temp_target(entry.name) in PROFILE_FILES
        if entry.is_symlink() or not entry.is_file() or not own:
            raise NasqError(f"{out}: holds {show(entry.name)}, which is not a profile file; nothing written - "
                            "choose another --out")


def _publish(files: dict[str, bytes], out: Path) -> None:
    """Write ``files`` into a temp folder beside ``out`` and rename it into place (an existing
    ``out`` is renamed aside first, then removed): a reader sees the old folder or the whole new
    one, never a mix. An existing ``out`` must hold only profile files."""
    _check_own_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = tmp.with_suffix(".old")
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a profile folder is readable like the catalog
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old.exists():
                os.replace(old, out)  # put the previous profile back
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def cross_validated_ms(space: SearchSpace, table: LatencyTable, ridge: float, specs: list[SubnetSpec],
                       measured: np.ndarray, folds: int = 5) -> np.ndarray:
    """Each subnet's prediction by a correction fitted without its fold (subnet ``i`` is in fold
    ``i % folds``): the error a calibration can promise on subnets it has not seen. The in-sample
    error says little when the subnets are few next to the correction's features."""
    out = np.empty(len(specs))
    for f in range(min(folds, len(specs))):
        test = np.arange(len(specs)) % folds == f
        train = [s for s, t in zip(specs, test, strict=True) if not t]
        model = LatencyPredictor(space, table, ridge=ridge).fit(train, measured[~test])
        out[test] = model.predict([s for s, t in zip(specs, test, strict=True) if t])
    return out


def calibrate_profile(profile: str, *, subnets: int = 40, out: Path | None = None, space: str | None = None,
                      seed: int = 0, repeats: int = 50, warmup: int = 5, rounds: int = 5, progress: Any = None,
                      base_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Refit the profile's whole-subnet correction on ``subnets`` subnets timed here and write a
    calibrated copy of the profile folder to ``out`` (default :func:`default_calibrated_dir`).
    Returns the new profile.yaml and the calibration summary; caches this host's check of the
    new profile (its verdict on the calibration subnets)."""
    from nasq.profiling.measure import correction_specs

    m = load_measured(profile, space, base_dir)
    host = host_identity()
    out = out or default_calibrated_dir(m.name, host, base_dir)
    specs = correction_specs(m.space, subnets, seed)
    before = m.predictor.predict(specs)
    if not np.isfinite(before).all():
        raise NasqError(f"profile {m.name} cannot run every calibration subnet of {m.space.name} (unsupported rows)")
    measured = time_subnets_ms(m.space, specs, backend=m.backend, threads=m.info.threads, warmup=warmup,
                               repeats=repeats, rounds=rounds, seed=seed, progress=progress)
    csv_bytes = (m.yaml_path.parent / LATENCY_CSV).read_bytes()
    table = LatencyTable.from_csv(csv_bytes.decode("utf-8"), str(out / LATENCY_CSV))
    refit = LatencyPredictor(m.space, table, ridge=m.predictor.ridge).fit(specs, measured)
    after = refit.predict(specs)
    held_out = cross_validated_ms(m.space, table, m.predictor.ridge, specs, measured)
    calibration = Calibration(host=host.node, cpu=host.cpu, date=_now(), subnets=len(specs), seed=seed,
                              from_profile=m.name, from_profile_hash=m.profile.hash,
                              median_abs_error_before=round(float(np.median(np.abs(measured / before - 1))), 4),
                              median_abs_error_after=round(float(np.median(np.abs(measured / held_out - 1))), 4),
                              median_abs_error_after_fit=round(float(np.median(np.abs(measured / after - 1))), 4),
                              factor_before=round(float(np.median(measured / before)), 4))
    info = m.info.model_dump(mode="json") | {"calibration": calibration.model_dump(mode="json")}
    yaml_text = _calibrated_yaml(m.yaml_path, out.name, m.name, host)
    _publish({PROFILE_YAML: yaml_text.encode("utf-8"), LATENCY_CSV: csv_bytes,
              LATENCY_MODEL_JSON: json_bytes(refit.to_dict()), MEASUREMENT_JSON: json_bytes(info)}, out)
    # This host's check of the new profile: the calibration subnets under the refitted correction.
    new = dataclasses.replace(m, name=out.name, yaml_path=out / PROFILE_YAML,
                              profile=HardwareProfile.from_yaml(out / PROFILE_YAML), calibration=calibration)
    result = _result(new, host, specs, [f"calibration {i + 1}" for i in range(len(specs))], after, measured,
                     {"seed": seed, "repeats": repeats, "warmup": warmup, "rounds": rounds, "source": "calibrate"})
    store_check(result)
    return out / PROFILE_YAML, calibration.model_dump(mode="json")


# ---------------------------------------------------------------- drift note
def _cpu_words(cpu: str) -> list[str]:
    """A CPU model as comparable words: ``AMD EPYC 7B13 64-Core Processor`` -> amd epyc 7b13 64-core."""
    cleaned = re.sub(r"\((r|tm|c)\)|\bprocessor\b|\bcpu\b|@.*$", " ", cpu.lower())
    return cleaned.split()


def same_cpu(a: str, b: str) -> bool:
    """Same model, or one names it less precisely (``AMD EPYC`` vs ``AMD EPYC 7B13``)."""
    wa, wb = _cpu_words(a), _cpu_words(b)
    n = min(len(wa), len(wb))
    return n > 0 and wa[:n] == wb[:n]


def measured_cpu(info: MeasurementInfo, calibration: Calibration | None) -> str:
    """The CPU the profile's predictions were made for: the calibrating host's, else the measuring one's
    (``device`` is ``<cpu model> (CPU, N threads)``)."""
    return calibration.cpu if calibration is not None else re.sub(r"\s*\(CPU,.*\)\s*$", "", info.device)


def drift_note(profile: HardwareProfile | str | Path) -> str | None:
    """One warning line when this machine's latency may differ from ``profile``'s predictions, else None:
    a cached check on this host whose verdict is ``scaled`` or ``drifted``, or, with no check, a
    CPU model other than the one the profile was measured (or calibrated) on. ``profile`` is a
    loaded HardwareProfile or the path of its profile.yaml. Never raises: a profile without a
    measurement (a modelled one), an unreadable file or cache gives None."""
    try:
        loaded = profile if isinstance(profile, HardwareProfile) else HardwareProfile.from_yaml(profile)
        info_path = Path(loaded.source).parent / MEASUREMENT_JSON
        if loaded.config.status != "measured" or not info_path.is_file():
            return None
        info, calibration = read_measurement(info_path)
    except (NasqError, OSError, ValueError):
        return None
    name, host = loaded.name, host_identity()
    check = cached_checks(name, loaded.hash).get(host.key)
    if check is not None:
        got = check.get("verdict")
        if got == "scaled":
            return (f"latency predictions for {name} are {_factor(check)} on this machine (checked "
                    f"{check.get('checked_at', '?')}): run `nasq profile calibrate {name}`")
        if got == "drifted":
            return (f"latency predictions for {name} rank subnets unlike this machine (Kendall tau "
                    f"{check.get('tau')}, checked {check.get('checked_at', '?')}): measure a profile here "
                    "with `nasq profile measure`")
        return None
    reference = measured_cpu(info, calibration)
    if same_cpu(reference, host.cpu):
        return None
    return (f"latency predictions for {name} were measured on {reference}; this machine is {host.cpu}: "
            f"run `nasq profile check {name}`")


def _factor(check: dict[str, Any]) -> str:
    factor = check.get("factor")
    if not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 0:
        return "off by an unknown factor"
    return f"{factor:.2f}x {'slower' if factor > 1 else 'faster'} than predicted" if factor != 1 else "as predicted"
