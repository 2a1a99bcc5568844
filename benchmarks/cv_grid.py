"""Grid search by K-fold cross-validation: nnfin next to scikit-learn and skorch, in one run.

Run (from the repository root)::

    .venv/bin/python benchmarks/cv_grid.py            # 12 configs x 5 folds x 200 epochs
    .venv/bin/python benchmarks/cv_grid.py --quick    # 20 epochs: a smoke run
    pip install -r requirements-bench.txt             # adds skorch (skipped with a note if missing)

The problem: a 1-w-w-1 sigmoid network on cos(x), n = 2000 uniform on [-pi/2, 3pi/2] (nnfin's
``[data] kind = "cos"``, all rows in the folds), Adam with batches of 64, MSE, no early stopping.
The grid: width 6 / 16 / 32 x lr 1e-3 / 1e-2 x L2 0 / 1e-4 = 12 configurations, each scored by
5-fold CV (``KFold(5, shuffle=True, random_state=0)``, the same folds for every peer) = 60 fits.
Inputs and targets are standardised with each fold's training rows for every peer, and the CV
MSE is in the data's units. Peers:

* ``nnfin``   - ``nnfin.tune`` with ``strategy = "grid"`` (Optuna GridSampler, in-memory
  study, no refit); the same candidates through ``evaluate_candidates`` (no Optuna) as
  ``nnfin-cv``;
* ``sklearn`` - ``GridSearchCV`` over ``MLPRegressor(solver="adam", batch_size=64,
  max_iter=epochs, alpha=L2, early_stopping=False)`` in a scaling pipeline;
* ``skorch``  - ``GridSearchCV`` over ``skorch.NeuralNetRegressor`` (torch Adam, L2 as
  ``weight_decay = 2 * L2``, which is nnfin's ``L2 * sum w^2``) in the same pipeline.

nnfin starts from scikit-learn's initialisation (``model.init = "sklearn"``: weights and biases
uniform in +-sqrt(2 / (fan_in + fan_out)) for logistic units), so the two compare training, not
starting points (``--init default`` for torch's ``nn.Linear`` scheme, which skorch uses and which
gives ~3x the CV MSE on this problem). At this error level the best CV MSE depends on the seed
as much as on the library: ``--seeds K`` retrains every best configuration found (nnfin's and
scikit-learn's) with K seeds in both libraries (nnfin: ``train.seed``, scikit-learn:
``random_state``; skorch is left out, it is too slow) and prints the spread, so the two are
compared on the same configurations, with scikit-learn also started from nnfin's initial
weights of each seed and a paired test (Wilcoxon) of whether the two libraries differ.

nnfin's searches take seconds and the others minutes, on a machine whose speed drifts: each
nnfin peer runs ``--repeats`` times (default 3), before, between and after the slow peers, and
its median is the time compared.

nnfin's throughput is also printed as FLOP/s - the multiply-adds of the 60 fits' forward and
backward passes at their own widths (3 x 2 x batch x sum(in x out) per step), over the wall
time - next to the machine's float32 ``torch.mm`` peak measured in the same run on the same
thread (best of 1024^2 and 2048^2 products, before and after).

L2 is not the same quantity everywhere: nnfin adds ``L2 * sum w^2`` to the mean loss, scikit-learn
adds ``alpha / 2 * ||W||^2 / batch`` to half the mean squared error. Everything runs on one CPU
thread (``OMP_NUM_THREADS=1``), one fit at a time (``n_jobs=1``); wall times include everything
each library does around its fits, after one untimed warm-up run of every peer.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy and torch start their thread pools

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import itertools  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

WIDTHS, LRS, L2S = (6, 16, 32), (1e-3, 1e-2), (0.0, 1e-4)


def grid() -> list[dict[str, Any]]:
    return [{"width": w, "lr": lr, "l2": l2} for w, lr, l2 in itertools.product(WIDTHS, LRS, L2S)]


def nnfin_overrides(args: argparse.Namespace) -> list[str]:
    return [f"data.n={args.n}", "data.split=[1.0, 0.0, 0.0]", "train.device='cpu'",
            f"train.epochs={args.epochs}", "train.batch_size=64", "train.progress=false",
            "model.activation='sigmoid'", f"model.init='{args.init}'", "optim.name='adam'",
            f"tune.folds={args.folds}",
            "tune.seed=0", "tune.strategy='grid'"]


def run_nnfin(args: argparse.Namespace) -> dict[str, Any]:
    from nnfin.app.tune import tune

    space = ('tune.space={"model.width" = [6, 16, 32], "optim.lr" = [1e-3, 1e-2], '
             '"penalty.l2" = [0.0, 1e-4]}')
    started = time.perf_counter()
    res = tune(overrides=[*nnfin_overrides(args), space], write=False)  # width w: neurons [w, w]
    wall = time.perf_counter() - started
    best = res.best_params or {}
    return {"wall_s": wall, "best": {"width": best["model.width"], "lr": best["optim.lr"],
                                     "l2": best["penalty.l2"]}, "cv_mse": res.best_value}


def run_nnfin_cv(args: argparse.Namespace) -> dict[str, Any]:
    from nnfin.config import load_config
    from nnfin.train.folds import evaluate_candidates, make_folds

    started = time.perf_counter()
    base = load_config(None, nnfin_overrides(args))
    cfgs = [load_config(base, [f"model.neurons=[{g['width']}, {g['width']}]", f"optim.lr={g['lr']}",
                               f"penalty.l2={g['l2']}"]) for g in grid()]
    results = evaluate_candidates(cfgs, make_folds(base, args.folds, seed=0), metric="val_mse")
    wall = time.perf_counter() - started
    i = int(np.argmin([r.mean for r in results]))
    return {"wall_s": wall, "best": grid()[i], "cv_mse": results[i].mean}


def train_flops(args: argparse.Namespace) -> float:
    """Multiply-adds x 2 of all fits' training steps (forward + two backward products)."""
    n_fit = args.n - args.n // args.folds  # rows a fold trains on (KFold: the rest held out)
    steps = args.epochs * -(-n_fit // 64)
    per_row = sum(2 * w + w * w for w, _, _ in itertools.product(WIDTHS, LRS, L2S))  # 1-w-w-1
    return 3 * 2 * 64 * per_row * steps * args.folds


def sgemm_peak() -> float:
    """GFLOP/s of float32 ``torch.mm`` on this thread: the best of 1024^2 and 2048^2 products."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(3):
            start = time.perf_counter()
            reps = max(1, int(0.2 / (2 * n**3 / 50e9)))
            for _ in range(reps):
                torch.mm(a, b)
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    from nnfin.config import load_config
    from nnfin.data import load_arrays

    x, y, _, _ = load_arrays(load_config(None, nnfin_overrides(args)).data)
    return x, y


def _search(estimator: Any, param_grid: dict[str, list], args: argparse.Namespace,
            names: dict[str, str], *, y_2d: bool = False) -> dict[str, Any]:
    from sklearn.model_selection import GridSearchCV, KFold

    x, y = data(args)
    search = GridSearchCV(estimator, param_grid, scoring="neg_mean_squared_error", n_jobs=1,
                          cv=KFold(args.folds, shuffle=True, random_state=0), refit=False)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached, as intended
        search.fit(x, y if y_2d else y.ravel())
    wall = time.perf_counter() - started
    best = {k: search.best_params_[v] for k, v in names.items()}
    if isinstance(best["width"], tuple):  # hidden_layer_sizes = (w, w)
        best["width"] = best["width"][0]
    return {"wall_s": wall, "cv_mse": -search.best_score_, "best": best}


def seeds_nnfin(args: argparse.Namespace, best: dict[str, Any], seeds: range) -> list[float]:
    """CV MSE of nnfin's best configuration for each seed (all seeds trained together)."""
    from nnfin.config import load_config
    from nnfin.train.folds import evaluate_candidates, make_folds

    base = load_config(None, nnfin_overrides(args))
    cfgs = [load_config(base, [f"model.neurons=[{best['width']}, {best['width']}]",
                               f"optim.lr={best['lr']}", f"penalty.l2={best['l2']}",
                               f"train.seed={seed}"]) for seed in seeds]
    return [r.mean for r in evaluate_candidates(cfgs, make_folds(base, args.folds, seed=0),
                                                metric="val_mse")]


def seeds_sklearn(args: argparse.Namespace, best: dict[str, Any], seeds: range) -> list[float]:
    """CV MSE of scikit-learn's best configuration for each ``random_state``."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = data(args)
    out = []
    for seed in seeds:
        mlp = MLPRegressor(hidden_layer_sizes=(best["width"], best["width"]), activation="logistic",
                           solver="adam",
                           alpha=best["l2"], batch_size=64, learning_rate_init=best["lr"],
                           max_iter=args.epochs, early_stopping=False,
                           n_iter_no_change=args.epochs + 1, tol=0.0, random_state=seed)
        est = TransformedTargetRegressor(make_pipeline(StandardScaler(), mlp),
                                         transformer=StandardScaler())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = cross_val_score(est, x, y.ravel(), scoring="neg_mean_squared_error",
                                     cv=KFold(args.folds, shuffle=True, random_state=0))
        out.append(float(-scores.mean()))
    return out


def seeds_sklearn_from_nnfin(args: argparse.Namespace, best: dict[str, Any],
                             seeds: range) -> list[float]:
    """CV MSE of scikit-learn's ``MLPRegressor`` started from nnfin's initial weights for each
    ``train.seed`` (a first one-epoch fit builds the network, its weights are then overwritten
    and a ``warm_start`` fit trains ``epochs`` epochs with a fresh Adam): the same starting
    point as :func:`seeds_nnfin`, so the two differ only in batch order and arithmetic."""
    from sklearn.model_selection import KFold
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    from nnfin.config import load_config
    from nnfin.train.folds import initial_model

    x, y = data(args)
    y = y.reshape(-1, 1)
    base = load_config(None, nnfin_overrides(args))
    out = []
    for seed in seeds:
        cfg = load_config(base, [f"model.neurons=[{best['width']}, {best['width']}]",
                                 f"train.seed={seed}"])
        start = [(w.detach().double().numpy(), b.detach().double().numpy())
                 for w, b in initial_model(cfg, 1, 1).layers()]
        errors = []
        for train, test in KFold(args.folds, shuffle=True, random_state=0).split(x):
            sx, sy = StandardScaler().fit(x[train]), StandardScaler().fit(y[train])
            xs, ys = sx.transform(x[train]), sy.transform(y[train]).ravel()
            mlp = MLPRegressor(hidden_layer_sizes=(best["width"], best["width"]),
                               activation="logistic", solver="adam", alpha=best["l2"],
                               batch_size=64, learning_rate_init=best["lr"], max_iter=1,
                               n_iter_no_change=args.epochs + 1, tol=0.0, random_state=seed,
                               warm_start=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlp.fit(xs, ys)  # builds the layers; its weights are replaced next
                for k, (w, b) in enumerate(start):
                    mlp.coefs_[k][...] = w
                    mlp.intercepts_[k][...] = b
                mlp.set_params(max_iter=args.epochs).fit(xs, ys)
            pred = sy.inverse_transform(mlp.predict(sx.transform(x[test])).reshape(-1, 1))
            errors.append(float(np.mean((pred - y[test]) ** 2)))
        out.append(float(np.mean(errors)))
    return out


def run_sklearn(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPRegressor(activation="logistic", solver="adam", batch_size=64, max_iter=args.epochs,
                       early_stopping=False, n_iter_no_change=args.epochs + 1, tol=0.0,
                       shuffle=True, random_state=0)
    est = TransformedTargetRegressor(make_pipeline(StandardScaler(), mlp), transformer=StandardScaler())
    param_grid = {"regressor__mlpregressor__hidden_layer_sizes": [(w, w) for w in WIDTHS],
                  "regressor__mlpregressor__learning_rate_init": list(LRS),
                  "regressor__mlpregressor__alpha": list(L2S)}
    names = {"width": "regressor__mlpregressor__hidden_layer_sizes",
             "lr": "regressor__mlpregressor__learning_rate_init", "l2": "regressor__mlpregressor__alpha"}
    return _search(est, param_grid, args, names)


class MLP(torch.nn.Module):
    """1-w-w-1 sigmoid network, as nnfin's ``mlp`` builds it."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.Sigmoid(),
                                       torch.nn.Linear(width, width), torch.nn.Sigmoid(),
                                       torch.nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def run_skorch(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from skorch import NeuralNetRegressor

    net = NeuralNetRegressor(MLP, optimizer=torch.optim.Adam, max_epochs=args.epochs, batch_size=64,
                             train_split=None, iterator_train__shuffle=True, verbose=0, device="cpu")
    y_scale = make_pipeline(StandardScaler(), FunctionTransformer(_f32, inverse_func=_f64))
    est = TransformedTargetRegressor(make_pipeline(StandardScaler(), FunctionTransformer(_f32), net),
                                     transformer=y_scale, check_inverse=False)
    param_grid = {"regressor__neuralnetregressor__module__width": list(WIDTHS),
                  "regressor__neuralnetregressor__lr": list(LRS),
                  "regressor__neuralnetregressor__optimizer__weight_decay": [2 * v for v in L2S]}
    names = {"width": "regressor__neuralnetregressor__module__width",
             "lr": "regressor__neuralnetregressor__lr",
             "l2": "regressor__neuralnetregressor__optimizer__weight_decay"}
    torch.manual_seed(0)
    res = _search(est, param_grid, args, names, y_2d=True)
    res["best"]["l2"] /= 2
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 epochs instead of 200 (smoke run)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--init", default="sklearn", help="nnfin's [model] init (default: sklearn)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each nnfin peer, spread between the slow peers (median)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="retrain the best configurations with this many seeds, both peers")
    parser.add_argument("--peers", default="nnfin,nnfin-cv,sklearn,skorch",
                        help="comma-separated subset of nnfin, nnfin-cv, sklearn, skorch")
    args = parser.parse_args()
    args.epochs = args.epochs or (20 if args.quick else 200)
    torch.set_num_threads(1)
    fits = len(grid()) * args.folds
    print(f"grid: {len(grid())} configs x {args.folds} folds x {args.epochs} epochs = {fits} fits; "
          f"n = {args.n}, batch 64, 1-w-w-1 sigmoid on cos(x); torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread")
    runners = {"nnfin": run_nnfin, "nnfin-cv": run_nnfin_cv, "sklearn": run_sklearn, "skorch": run_skorch}
    peers = []
    for name in args.peers.split(","):
        if name == "skorch" and importlib.util.find_spec("skorch") is None:
            print("skorch: not installed, skipped (pip install -r requirements-bench.txt)")
            continue
        peers.append(name)
    warm = argparse.Namespace(**{**vars(args), "epochs": 1, "folds": 2, "n": 200})
    for name in peers:  # untimed: imports, first-call allocations and kernel selection
        runners[name](warm)
    # nnfin's peers take seconds, the others minutes: nnfin runs --repeats times, before,
    # between and after the slow ones, so that its median sees the machine they saw
    fast = [p for p in peers if p.startswith("nnfin")]
    slow = [p for p in peers if not p.startswith("nnfin")]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in peers}
    peaks = [sgemm_peak()]
    for i in range(max(args.repeats if fast else 0, len(slow))):
        for name in fast if i < args.repeats else []:
            print(f"{name}: run {i + 1} of {args.repeats} ...", flush=True)
            runs[name].append(runners[name](args))
        if i < len(slow):
            print(f"{slow[i]}: running ...", flush=True)
            runs[slow[i]].append(runners[slow[i]](args))
    peaks.append(sgemm_peak())
    results = {name: {**r[0], "wall_s": float(np.median([x["wall_s"] for x in r])),
                      "walls": [x["wall_s"] for x in r]} for name, r in runs.items() if r}
    ref = results.get("nnfin", next(iter(results.values()), None))
    print(f"\n{'peer':<10}{'wall s':>9}{'[min, max] of runs':>22}{'per fit ms':>12}{'x nnfin':>9}"
          f"   {'CV MSE':>10}   best (width, lr, L2)")
    for name, r in results.items():
        ratio = r["wall_s"] / ref["wall_s"] if ref else float("nan")
        b = r["best"]
        spread = (f"[{min(r['walls']):.2f}, {max(r['walls']):.2f}] x{len(r['walls'])}"
                  if len(r["walls"]) > 1 else "1 run")
        print(f"{name:<10}{r['wall_s']:>9.2f}{spread:>22}{1000 * r['wall_s'] / fits:>12.1f}"
              f"{ratio:>9.2f}   {r['cv_mse']:>10.3e}   ({b['width']}, {b['lr']:g}, {b['l2']:g})")
    for name in ("nnfin", "nnfin-cv"):
        if name in results:
            others = [f"{results[o]['wall_s'] / results[name]['wall_s']:.1f}x faster than {o}"
                      for o in ("sklearn", "skorch") if o in results]
            print(f"{name}: {', '.join(others) or 'no peer run'} (its median run)")
    if args.seeds > 1:
        seed_spread(args, results)
    peak = sum(peaks) / len(peaks)
    flops = train_flops(args)
    print(f"\nsgemm peak (float32 torch.mm, 1 thread): {peaks[0]:.1f} GFLOP/s before, "
          f"{peaks[1]:.1f} after")
    for name in ("nnfin", "nnfin-cv"):
        if name in results:
            rate = flops / results[name]["wall_s"] / 1e9
            print(f"{name}: {flops / 1e9:.1f} GFLOP of training in {results[name]['wall_s']:.2f} s = "
                  f"{rate:.2f} GFLOP/s = {rate / peak:.1%} of the peak (small products, sigmoids "
                  "and per-step overhead: the rest)")


def seed_spread(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    """Each best configuration found, retrained by nnfin and scikit-learn with ``--seeds`` seeds,
    and whether the two libraries differ: a paired Wilcoxon signed-rank test of nnfin against
    scikit-learn started from the same initial weights (seed by seed), a Mann-Whitney U test
    against scikit-learn from its own (both two-sided, ``scipy.stats``)."""
    from scipy.stats import mannwhitneyu, wilcoxon

    bests: list[dict[str, Any]] = []
    for name in ("nnfin-cv", "nnfin", "sklearn"):
        if name in results and results[name]["best"] not in bests:
            bests.append(results[name]["best"])
    spread = {"nnfin": seeds_nnfin, "sklearn": seeds_sklearn,
              "sklearn from nnfin's init": seeds_sklearn_from_nnfin}
    print(f"\nCV MSE of the best configurations over {args.seeds} seeds (seed 0 is the search's; "
          "the last line starts scikit-learn from nnfin's initial weights of each seed):")
    for best in bests:
        values: dict[str, list[float]] = {}
        for name, fn in spread.items():
            ran = ("nnfin" in results or "nnfin-cv" in results) if name == "nnfin" else \
                "sklearn" in results
            if ran:
                values[name] = v = fn(args, best, range(args.seeds))
                print(f"({best['width']}, {best['lr']:g}, {best['l2']:g}) {name:<26} median "
                      f"{np.median(v):.3e}, mean {np.mean(v):.3e}, min {min(v):.3e}, "
                      f"max {max(v):.3e}  [{', '.join(f'{x:.2e}' for x in v)}]", flush=True)
        mine = values.get("nnfin")
        if mine is None or len(values) < 3:
            continue
        paired = values["sklearn from nnfin's init"]
        wins = sum(a < b for a, b in zip(mine, paired, strict=True))
        p_paired = wilcoxon(mine, paired).pvalue
        p_own = mannwhitneyu(mine, values["sklearn"]).pvalue
        print(f"  nnfin lower than scikit-learn from the same start in {wins} of {len(mine)} seeds "
              f"(Wilcoxon p = {p_paired:.2f}); vs scikit-learn's own starts: Mann-Whitney "
              f"p = {p_own:.2f} (p > 0.05: no difference detectable at this many seeds)")


if __name__ == "__main__":
    main()
