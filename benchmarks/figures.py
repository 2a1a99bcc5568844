"""Cost of nnfin's figures: each figure maker built and saved as PNG, warm.

Run (from the repository root)::

    .venv/bin/python benchmarks/figures.py                 # median of 7 runs per figure
    .venv/bin/python benchmarks/figures.py --repeats 11 --keep out/   # and keep the PNGs

Each figure is built from small in-memory inputs, then saved through ``nnfin.plots.save`` (the
one writer, PNG at 120 dpi) into a temporary folder; the time is build + lay out + save, the
median over ``--repeats`` runs after one untimed warm-up run of every figure (fonts, glyph
caches and imports are paid there, once per process as in a real run).

The first seven are the PNGs that a 12-configuration grid search (``nnfin.tune`` with a run
folder) writes: ``tune/plots/history.png``, ``params.png``, ``optuna_history.png``,
``optuna_slice.png``, ``optuna_importances.png`` and the refit's ``plots/fit.png`` and
``loss.png``; their total is printed. The study is ``benchmarks/cv_grid.py``'s grid (width
6 / 16 / 32 x lr 1e-3 / 1e-2 x L2 0 / 1e-4, all categorical as grid search makes them) with
made-up scores. The Optuna plots are timed with Optuna's own drawing (``plot_*``) included;
``optuna_importances`` includes the fANOVA fit too. The others are the remaining figure makers:
a 3-input fit, a params figure with a log-float, an integer and a categorical parameter, the
learning-rate range test, ``nnfin runs --plot``'s loss curves and the finance report's figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from nnfin.plots import fit_figure, loss_figure, save

TUNE_SET = ("history", "params", "optuna_history", "optuna_slice", "optuna_importances",
            "fit_1_input", "loss")


def _history(epochs: int = 300) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    rng = np.random.default_rng(0)
    train = 0.5 * e ** -1.2 * np.exp(rng.normal(0, 0.05, epochs))
    return pd.DataFrame({"epoch": e, "train_loss": train, "val_loss": train * 1.3})


def _grid_study():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"model.width": [6, 16, 32], "optim.lr": [1e-3, 1e-2], "penalty.l2": [0.0, 1e-4]}
    sampler = optuna.samplers.GridSampler(space, seed=0)
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        w = trial.suggest_categorical("model.width", space["model.width"])
        lr = trial.suggest_categorical("optim.lr", space["optim.lr"])
        l2 = trial.suggest_categorical("penalty.l2", space["penalty.l2"])
        return 1e-3 / (w * lr) * (1 + 1e3 * l2)

    study.optimize(objective, n_trials=12)
    return study


def _ranking(study) -> pd.DataFrame:
    rows = [{"trial": t.number, "state": t.state.name, "mean": t.value, **t.params}
            for t in study.trials]
    df = pd.DataFrame(rows).sort_values("mean").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def _mixed_ranking() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 20
    neurons = ["[6, 6]", "[16, 16]", "[32, 32, 32]", "[64, 64, 64]"]
    return pd.DataFrame({"trial": range(n), "state": ["COMPLETE"] * n,
                         "mean": 10 ** rng.uniform(-4, -1, n),
                         "optim.lr": 10 ** rng.uniform(-4, -1, n),
                         "train.batch_size": rng.choice([16, 32, 64, 128], n),
                         "model.neurons": rng.choice(neurons, n)})


def makers(tmp: Path) -> dict[str, Callable[[], object]]:
    """Every figure maker, as a function that builds its figure and saves it into ``tmp``."""
    import optuna.visualization.matplotlib as ovm

    from nnfin.app.lr_find import LRFindResult
    from nnfin.app.lr_find import figure as lr_figure
    from nnfin.app.runs_table import compare_figure
    from nnfin.finance.report_plots import error_surface_figure, hedging_figure
    from nnfin.tune import report

    rng = np.random.default_rng(0)
    history = _history()
    x1 = rng.uniform(-1.5, 4.5, (1600, 1))
    y1 = np.cos(x1) + rng.normal(0, 0.05, x1.shape)
    x3 = rng.uniform(0, 1, (1600, 3))
    y3 = x3.sum(axis=1, keepdims=True) ** 2

    def pred3(x):
        return x.sum(axis=1, keepdims=True) ** 2 + 0.01

    study = _grid_study()
    ranked = _ranking(study)
    names = ["model.width", "optim.lr", "penalty.l2"]
    mixed = _mixed_ranking()
    lrs = np.geomspace(1e-7, 10, 100)
    losses = 1 / (1 + lrs * 1e3) + np.where(lrs > 1, lrs, 0) + 0.01
    lr_res = LRFindResult(lrs=lrs, losses=losses, smoothed=losses, suggestion=1e-3, min_div_10=1e-2,
                          stop_reason="end")
    hs = [_history(200), _history(300)]
    xs = rng.uniform([0.5, 0.05], [1.5, 2.0], (3000, 2))
    tests = {"test-wide": {"x": xs, "y": xs[:, 0], "pred": xs[:, 0] + rng.normal(0, 1e-3, 3000)},
             "test-narrow": {"x": xs, "y": xs[:, 0], "pred": xs[:, 0] + rng.normal(0, 1e-4, 3000)}}
    pnls = {"no hedge": rng.normal(0, 0.1, 4000), "exact delta": rng.normal(0, 1e-2, 4000),
            "network delta": rng.normal(0, 1.1e-2, 4000)}

    return {
        "history": lambda: save(report.history_figure(ranked, "val_mse"), tmp / "history.png"),
        "params": lambda: save(report.params_figure(ranked, names, "val_mse", set(),
                                                    categorical=set(names)), tmp / "params.png"),
        "optuna_history": lambda: save(report._figure(ovm.plot_optimization_history(
            study, target_name="val_mse")), tmp / "optuna_history.png"),
        "optuna_slice": lambda: save(report._slanted(ovm.plot_slice(study, target_name="val_mse"),
                                                     len(names)), tmp / "optuna_slice.png"),
        "optuna_importances": lambda: save(report._figure(ovm.plot_param_importances(
            study, target_name="val_mse")), tmp / "optuna_importances.png"),
        "fit_1_input": lambda: save(fit_figure(x1, y1, np.cos, feature="x", target="y"),
                                    tmp / "fit.png"),
        "loss": lambda: save(loss_figure(history, "run-1", units="scaled units"), tmp / "loss.png"),
        "fit_3_inputs": lambda: save(fit_figure(x3, y3, pred3, target="price"), tmp / "fit3.png"),
        "params_mixed": lambda: save(report.params_figure(
            mixed, ["optim.lr", "train.batch_size", "model.neurons"], "val_mse", {"optim.lr"},
            categorical={"model.neurons"}), tmp / "params_mixed.png"),
        "lr_find": lambda: save(lr_figure(lr_res), tmp / "lr_find.png"),
        "runs_compare": lambda: save(compare_figure(hs, ["run-1", "run-2"]), tmp / "compare.png"),
        "error_surface": lambda: save(error_surface_figure(tests, ["moneyness", "tau"], "price"),
                                      tmp / "error_surface.png"),
        "hedging": lambda: save(hedging_figure(pnls), tmp / "hedging.png"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="write the PNGs here (kept)")
    args = ap.parse_args()

    from optuna.exceptions import ExperimentalWarning

    warnings.simplefilter("ignore", ExperimentalWarning)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(args.keep) if args.keep else Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        figs = makers(tmp)
        for make in figs.values():  # warm-up: imports, fonts, glyph caches
            with matplotlib.rc_context():
                make()
        times: dict[str, list[float]] = {name: [] for name in figs}
        for _ in range(args.repeats):  # figures interleaved within a repeat
            for name, make in figs.items():
                with matplotlib.rc_context():  # no figure sees another's style (Optuna sets ggplot)
                    t0 = time.perf_counter()
                    make()
                    times[name].append(time.perf_counter() - t0)

    print(f"python {platform.python_version()}, matplotlib {matplotlib.__version__}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats} warm runs (build + save, PNG 120 dpi)")
    med = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    print(f"{'figure':<22}{'ms':>8}")
    for name, ms in med.items():
        mark = "  (tune set)" if name in TUNE_SET else ""
        print(f"{name:<22}{ms:8.1f}{mark}")
    tune_total = sum(med[n] for n in TUNE_SET)
    print(f"{'total, tune set (7)':<22}{tune_total:8.1f}")
    print(f"{'total, all':<22}{sum(med.values()):8.1f}")
    print(f"slowest figure: {max(med, key=med.get)} {max(med.values()):.1f} ms", file=sys.stdout)


if __name__ == "__main__":
    main()
