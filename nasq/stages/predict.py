"""Stage 4, predict: the accuracy predictor fitted on the evaluated sample (cross-validated
report), saved as ``predictor.json`` + ``predictor.npz`` in the workdir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nasq.experiment import Experiment
from nasq.predict.fit import AccuracyPredictor, FitReport, fit_with_holdout
from nasq.stages.evaluate import Samples
from nasq.stages.progress import Reporter


@dataclass
class FittedPredictor:
    predictor: AccuracyPredictor
    report: FitReport


def run(exp: Experiment, samples: Samples, workdir: Path, rep: Reporter | None = None) -> FittedPredictor:
    """Fit the recipe's predictor on ``samples``; stamped with the hash of their ledger rows."""
    predictor, report = fit_with_holdout(exp.recipe, exp.space, exp.cost_model(), samples.specs, samples.top1,
                                         exp.config.search.seed)
    predictor.save(workdir, samples.rows_sha256)
    if rep is not None:
        rep.say(f"      cross-validated Kendall tau {report.kendall_tau:.3f}, Spearman {report.spearman:.3f}, "
                f"RMSE {report.rmse:.2f} pts, top-10 % precision {report.top10_precision:.2f}")
        if hasattr(predictor.model, "chosen"):
            rep.say(f"      auto: picked {predictor.model.chosen} (CV tau {predictor.model.cv_scores})")
    return FittedPredictor(predictor, report)
