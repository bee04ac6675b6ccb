"""Load an experiment file and everything it names, validating all of it before anything runs.

Catalog names (``space: mbconv_small``) are looked up as ``search_spaces/<name>.yaml``,
``hardware_profiles/<name>/profile.yaml`` and ``predictors/<name>.yaml`` under, in order: the
experiment file's folder and its parent, ``$NASQ_CATALOG``, the working directory, and the nasq
source checkout. A value with a ``/`` or a ``.yaml`` suffix is a path relative to the experiment.

The run folder (:attr:`Experiment.workdir`) is ``workdir`` with ``{name}`` filled in, checked again
here (see :class:`~nasq.specs.ExperimentConfig`); :func:`remove_own_folder` is the one way a stage
deletes a folder in it, and only one holding nothing but the files nasq writes there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nasq import data as data_mod
from nasq.errors import ConfigError, NasqError
from nasq.files import sha256_bytes, temp_target
from nasq.hardware import CostModel, HardwareProfile, TargetsCostModel
from nasq.predict.fit import Recipe
from nasq.predict.latency import load_profile_predictor
from nasq.space import SearchSpace, SubnetSpec, load_space
from nasq.specs import ExperimentConfig, load_model, one_line, show, workdir_path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
DEMO_EXPERIMENT = PACKAGE_ROOT / "examples" / "demo.yaml"

CATALOGS = {
    "space": ("search_spaces", "{name}.yaml"),
    "hardware": ("hardware_profiles", "{name}/profile.yaml"),
    "predictor": ("predictors", "{name}.yaml"),
}


@dataclass
class Experiment:
    config: ExperimentConfig
    source: str
    hash: str
    space: SearchSpace
    profiles: list[HardwareProfile]
    recipe: Recipe
    base_dir: Path
    latency: list[Any]  # per profile: its LatencyPredictor when measured, else None

    @property
    def profile(self) -> HardwareProfile:
        return self.profiles[0]

    def cost_models(self) -> list[CostModel]:
        """One cost model per profile, in ``hardware`` order. A measured profile's predictor (table
        sum + fitted correction) replaces the roofline latency."""
        return [CostModel(self.space, prof, predictor.predict if predictor is not None else None)
                for prof, predictor in zip(self.profiles, self.latency, strict=True)]

    def cost_model(self) -> TargetsCostModel:
        """What the search scores with: the first profile's ``latency_ms``, ``size_mb`` and
        ``bops_g``, plus ``latency_ms@p`` / ``throughput_ips@p`` of every profile when the experiment
        has several or names a per-target metric (see :class:`~nasq.hardware.TargetsCostModel`)."""
        return TargetsCostModel(self.cost_models(), per_target=self.per_target)

    @property
    def per_target(self) -> bool:
        cfg = self.config
        named = [*cfg.objectives, *(c.key for c in cfg.constraints)]
        return len(self.profiles) > 1 or any("@" in m or m == "throughput_ips" for m in named)

    def emulated_layers(self, spec: SubnetSpec) -> list[str]:
        """Names of the layers of ``spec`` whose weight or activation format some target only
        emulates (empty unless ``allow_emulated`` let such formats into the search)."""
        emulated = set().union(*(p.emulated for p in self.profiles))
        if not emulated:
            return []
        return [layer.name for layer in self.space.layer_shapes(spec)
                if layer.w_format in emulated or layer.a_format in emulated]

    @property
    def workdir(self) -> Path:
        """The run folder: ``workdir`` with ``{name}`` filled in, below the current directory
        (relative, without ``..``) or where an absolute ``workdir`` says."""
        try:
            return workdir_path(self.config.workdir, self.config.name)
        except ValueError as e:
            raise ConfigError(self.source, "workdir", str(e)) from None

    def lineage(self) -> dict[str, str]:
        """Names and hashes of what a run used; ``nasq.profile`` is the first target, and with several
        targets ``nasq.targets`` lists every one as ``name:hash``."""
        out = {"nasq.space": self.space.name, "nasq.space_hash": self.space.hash,
               "nasq.profile": self.profile.name, "nasq.profile_hash": self.profile.hash,
               "nasq.recipe": self.recipe.config.name, "nasq.recipe_hash": self.recipe.hash,
               "nasq.experiment_hash": self.hash}
        if len(self.profiles) > 1:
            out["nasq.targets"] = ",".join(f"{p.name}:{p.hash[:12]}" for p in self.profiles)
        return out


def packaged_catalog() -> Path:
    """The catalogs shipped inside the package (``nasq/_catalog/<folder>``: symlinks in a source
    checkout, plain files in an installed wheel), so an installed nasq finds them without a checkout."""
    return Path(str(resources.files("nasq") / "_catalog"))


def search_roots(base_dir: Path) -> list[Path]:
    roots = [base_dir, base_dir.parent]
    if os.environ.get("NASQ_CATALOG"):
        roots.append(Path(os.environ["NASQ_CATALOG"]))
    roots += [Path.cwd(), PACKAGE_ROOT, packaged_catalog()]
    out: list[Path] = []
    for r in roots:
        if r not in out:
            out.append(r)
    return out


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, an embedded NUL
        return False


_SHOW_KNOWN = 20


def resolve(kind: str, name: str, base_dir: Path, source: str, field: str) -> Path:
    if "/" in name or name.endswith(".yaml"):
        try:
            path = (base_dir / name).resolve()
        except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: a symlink loop
            raise ConfigError(source, field, f"not a usable path ({one_line(e)}), got {show(name)}") from None
        if not _is_file(path):
            raise ConfigError(source, field, f"file not found, got {show(name)} (looked at {show(str(path), 200)})")
        return path
    folder, pattern = CATALOGS[kind]
    for root in search_roots(base_dir):
        path = root / folder / pattern.format(name=name)
        if _is_file(path):
            return path
    known = sorted({p.parent.name if kind == "hardware" else p.stem
                    for r in search_roots(base_dir) for p in (r / folder).glob(pattern.format(name="*"))})
    listed = ", ".join(known[:_SHOW_KNOWN]) + (f", ... ({len(known)} in all)" if len(known) > _SHOW_KNOWN else "")
    raise ConfigError(source, field, f"no {kind} named {show(name)} in {folder}/ (known: {listed or 'none'})")


def remove_own_folder(folder: Path, own_files: Iterable[str]) -> None:
    """Delete ``folder`` (e.g. ``<workdir>/export``) when it holds only regular files named in
    ``own_files`` (or their temp-file leftovers, ``.NAME.XXXXXXXX.tmp``): what nasq itself wrote there. Anything else in it
    - another file, a sub-folder, a symlink, or ``folder`` being a symlink or a file - is refused
    with one NasqError line and nothing is deleted: a workdir may point at a folder the user owns."""
    allowed = set(own_files)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise NasqError(f"{folder}: not a folder nasq wrote (it is a {'symlink' if folder.is_symlink() else 'file'}); "
                        "move it away or point workdir elsewhere")
    for entry in folder.iterdir():
        leftover = temp_target(entry.name)  # a killed writer's temp file (nasq.files.write_beside)
        if entry.is_symlink() or not entry.is_file() or not (entry.name in allowed or leftover in allowed):
            raise NasqError(f"{folder}: holds {show(entry.name)}, which nasq did not write; nothing deleted - "
                            "move the folder away or point workdir elsewhere")
    shutil.rmtree(folder)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_experiment(path: str | Path | None = None) -> Experiment:
    """Validate the experiment and every catalog file it names; nothing is written."""
    if path is None:
        path = DEMO_EXPERIMENT if DEMO_EXPERIMENT.is_file() else None
    if path is None:
        config, source, digest, base = ExperimentConfig(), "<defaults>", sha256_bytes(b"{}"), PACKAGE_ROOT
    else:
        p = Path(path)
        source = str(path) if str(path).isprintable() else show(str(path), 200)  # errors stay one line
        config, digest = load_model(ExperimentConfig, p, source)
        base = p.resolve().parent
    space_path = resolve("space", config.space, base, source, "space")
    space = load_space(space_path, _display(space_path))
    if not isinstance(space, SearchSpace):  # no network to train: the pipeline cannot run it
        raise ConfigError(source, "space", f"{config.space!r} is a family: generic space (named genes, no "
                          "network): search it from Python with nasq.search_generic, got a pipeline experiment")
    profiles, latency = [], []
    for i, name in enumerate(config.hardware):
        prof_path = resolve("hardware", name, base, source, f"hardware[{i}]")
        prof = HardwareProfile.from_yaml(prof_path, _display(prof_path))
        prof.check_space(space)
        # Fail before anything runs when a measured table lacks rows for the space, or its
        # correction was fitted on another table or space (one-line ConfigError / LineageError).
        latency.append(load_profile_predictor(prof_path, space))
        profiles.append(prof)
    rec_path = resolve("predictor", config.predictor, base, source, "predictor")
    recipe = Recipe.from_yaml(rec_path, _display(rec_path))
    _check_cross(config, space, profiles, source)
    data_mod.check_available(config.data, source, space.config)
    return Experiment(config, source, digest, space, profiles, recipe, base, latency)


def _check_cross(config: ExperimentConfig, space: SearchSpace, profiles: list[HardwareProfile], source: str) -> None:
    names = _profile_names(profiles, source)
    known = ", ".join(map(repr, names))
    which = "the experiment's hardware profile" if len(names) == 1 else "one of the experiment's hardware profiles"
    for i, c in enumerate(config.constraints):
        if c.profile is not None and c.profile not in names:
            raise ConfigError(source, f"constraints[{i}].profile",
                              f"must name {which} ({known}) or be left out, got {c.profile!r}")
    named = [(f"objectives[{i}]", m) for i, m in enumerate(config.objectives)]
    named += [(f"constraints[{i}].metric", c.metric) for i, c in enumerate(config.constraints)]
    for field, metric in named:
        _, at, profile = metric.partition("@")
        if at and profile not in names:
            raise ConfigError(source, field, f"'@{profile}' must name {which} ({known}), got {metric!r}")
    if not config.allow_emulated:
        _refuse_emulated(space, profiles, source)
    shrink = space.shrink_problems(config.train.shrink)
    if shrink:
        raise ConfigError(source, *shrink[0])
    if config.search.max_true_evals < 5:
        raise ConfigError(source, "search.max_true_evals", f"must be >= 5 to form a front, got {config.search.max_true_evals}")


def _profile_names(profiles: list[HardwareProfile], source: str) -> list[str]:
    """The names ``@<profile>`` and a constraint's ``profile`` may say: the profiles' own names (what
    the metric columns use). Two profiles of one name are refused."""
    names: list[str] = []
    for i, prof in enumerate(profiles):
        if prof.name in names:
            raise ConfigError(source, f"hardware[{i}]", f"profile name {prof.name!r} is used by another entry; "
                              "per-target metrics (latency_ms@<profile>) need distinct profile names")
        names.append(prof.name)
    return names


def _refuse_emulated(space: SearchSpace, profiles: list[HardwareProfile], source: str) -> None:
    """Refuse (rather than narrow the menu behind the user's back) a space that would let the search
    pick formats a target only emulates: their speed there says nothing about a native kernel."""
    for i, prof in enumerate(profiles):
        emulated = prof.emulated_in(space)
        if emulated:
            raise ConfigError(source, f"hardware[{i}]",
                              f"format {emulated[0]!r} of space '{space.name}'s precision menu is only emulated "
                              f"by profile '{prof.name}' (backend {prof.config.backend}; emulated: "
                              f"{', '.join(emulated)}): set allow_emulated: true or remove it from the "
                              "space's precision menu")
