"""Baselines behind the same ``propose`` hook as LINAS, on true evaluations only: random search,
NSGA-II on true evaluations (pymoo's operators, steady state over everything evaluated), and
optuna's multi-objective NSGAIISampler and TPESampler.

Each proposal is rebuilt from the evaluations so far and the iteration's own generator, never
from hidden in-memory state, so a resumed search proposes what an uninterrupted one would.
(``nasq.cluster.tune`` runs the optuna samplers as Ray Tune experiments instead, with Tune's own restore.)
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
from optuna.distributions import IntDistribution
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population

from nasq.errors import NasqError
from nasq.search.nsga import _problem_class, constraint_matrix, make_algorithm
from nasq.search.pareto import direction
from nasq.search.state import SearchState, derived_seed
from nasq.search.strategy import STRATEGIES, Proposal, SearchTask, Strategy, no_feasible_message
from nasq.space import SubnetSpec


def true_population_size(task: SearchTask) -> int:
    """Population of the true-evaluation GAs: a fifth of the budget (at least 8, at most the
    configured population) so that a few generations fit in the budget."""
    return max(8, min(task.config.population, task.config.max_true_evals // 5))


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    """Uniformly random feasible subnets."""

    name = "random"
    extendable = True

    def propose(self, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int) -> Proposal:
        return self.random_feasible(rng, k, set(known)), None


@STRATEGIES.register("nsga2_true")
class NSGA2True(Strategy):
    """NSGA-II on true evaluations: a random initial population, then each iteration selects the
    parents by rank and crowding among all evaluated subnets and breeds ``k`` new children."""

    name = "nsga2_true"

    def propose(self, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int) -> Proposal:
        task, pop_size = self.task, true_population_size(self.task)
        ok = [key for key, v in known.items() if math.isfinite(v)]
        specs = {key: state.specs.get(key) or next(s for s in task.warm if s.key() == key) for key in ok}
        if len(ok) < pop_size:
            return self.random_feasible(rng, min(k, pop_size - len(ok)), set(known)), None

        def score(batch: list[SubnetSpec]) -> dict[str, np.ndarray]:
            return task.score(batch, np.array([known[s.key()] for s in batch]))

        _, SubnetProblem = _problem_class()
        problem = SubnetProblem(task.space, score, task.objectives, task.constraints)
        algorithm = make_algorithm(task.space, pop_size)
        algorithm.random_state = rng  # binary tournament draws from the algorithm's generator
        archive = Population.new("X", np.stack([task.space.encode(specs[key]) for key in ok]))
        Evaluator().eval(problem, archive)
        parents = algorithm.survival.do(problem, archive, n_survive=pop_size, random_state=rng)
        children = algorithm.mating.do(problem, parents, 4 * k, algorithm=algorithm, random_state=rng)
        out, seen = [], set(known)
        for x in np.asarray(children.get("X"), dtype=np.int64):
            spec = task.space.decode(x)
            if spec.key() not in seen and task.feasible([spec])[0] and len(out) < k:
                seen.add(spec.key())
                out.append(spec)
        out += self.random_feasible(rng, k - len(out), seen) if len(out) < k else []
        return out, None


class _OptunaStrategy(Strategy):
    """A fresh study per iteration: every evaluation so far is added as a finished trial, then
    ``k`` new feasible subnets are asked for (infeasible asks are told their constraint violation)."""

    def _sampler(self, seed: int):
        raise NotImplementedError

    def propose(self, state: SearchState, known: dict[str, float], rng: np.random.Generator, k: int) -> Proposal:
        task = self.task
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dists = gene_distributions(task.space)
        study = optuna.create_study(directions=directions(task.objectives),
                                    sampler=self._sampler(derived_seed(task.config.seed, state.iteration)))
        order = [s.key() for s in task.warm] + [key for key in state.keys if key not in {s.key() for s in task.warm}]
        specs = {**{s.key(): s for s in task.warm}, **state.specs}
        gen_key = f"{type(study.sampler).__name__}:generation"
        pop = true_population_size(task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for i, key in enumerate(order):
                if math.isfinite(known[key]):
                    study.add_trial(self._trial(specs[key], known[key], dists, {gen_key: i // pop}))
            return self._ask(study, dists, known, k), None

    def _trial(self, spec: SubnetSpec, top1: float, dists: dict, system_attrs: dict):
        genome = self.task.space.encode(spec)
        values = self.task.score([spec], np.array([top1]))
        return optuna.trial.create_trial(params={f"g{i}": int(g) for i, g in enumerate(genome)}, distributions=dists,
                                         values=[float(values[o][0]) for o in self.task.objectives],
                                         system_attrs=system_attrs, constraints={"cost": 0.0})

    def _ask(self, study, dists: dict, known: dict[str, float], k: int) -> list[SubnetSpec]:
        task, out, seen = self.task, [], set(known)
        for _ in range(30 * k):
            if len(out) >= k:
                break
            trial = study.ask(dists)
            spec = task.space.decode([trial.params[f"g{i}"] for i in range(task.space.n_genes)])
            values = task.score([spec], np.array([known.get(spec.key(), 0.0)]))
            violation = float(np.clip(constraint_matrix(values, task.constraints, 1), 0, None).sum())
            trial.set_constraint("cost", violation)
            if violation > 0 or spec.key() in seen:
                study.tell(trial, [float(values[o][0]) for o in task.objectives])
                continue
            seen.add(spec.key())
            out.append(spec)
        if not out and task.constraints and not any(task.feasible(list(task.warm))):

            raise NasqError(no_feasible_message(task, np.random.default_rng(0)))
        return out


def gene_distributions(space) -> dict:
    return {f"g{i}": IntDistribution(0, int(u)) for i, u in enumerate(space.upper)}


def directions(objectives: tuple[str, ...]) -> list[str]:
    return ["maximize" if direction(o) > 0 else "minimize" for o in objectives]


@STRATEGIES.register("optuna_nsga2")
class OptunaNSGA2(_OptunaStrategy):
    name = "optuna_nsga2"

    def _sampler(self, seed: int):
        return optuna.samplers.NSGAIISampler(population_size=true_population_size(self.task), seed=seed)


@STRATEGIES.register("optuna_tpe")
class OptunaTPE(_OptunaStrategy):
    name = "optuna_tpe"

    def _sampler(self, seed: int):
        n_startup = max(8, true_population_size(self.task))
        return optuna.samplers.TPESampler(n_startup_trials=n_startup, seed=seed, multivariate=True)
