"""``nnfin.tune("grid.toml")`` end to end next to scikit-learn's ``GridSearchCV(refit=True)``.

Run (from the repository root)::

    .venv/bin/python benchmarks/tune_end_to_end.py              # 3 runs of each, alternated
    .venv/bin/python benchmarks/tune_end_to_end.py --repeats 5

The problem and grid are ``benchmarks/cv_grid.py``'s: a 1-w-w-1 sigmoid network on cos(x),
n = 2000, Adam with batches of 64, MSE; width 6 / 16 / 32 x lr 1e-3 / 1e-2 x L2 0 / 1e-4 = 12
configurations x 5 folds, here 100 epochs. Each side does what its user's call does:

* ``nnfin``   - ``nnfin.tune("grid.toml")`` with a run folder: the file-based SQLite study, the
  batched cross-validation, trials.csv, ranking.csv, best.toml, plots/history.png and
  params.png, then the refit of the best configuration on all rows through the one-network
  Trainer (model files, metrics, history, checkpoints, plots/fit.png and loss.png);
* ``sklearn`` - ``GridSearchCV(MLPRegressor(...), refit=True)`` in a scaling pipeline, the same
  ``KFold(5, shuffle=True, random_state=0)``, then the refit on all rows.

Every run is a fresh Python process (one torch thread, one BLAS thread: ``OMP_NUM_THREADS=1``),
timed from before the library's first import to the end of the call, so each side pays its own
imports as a user's script does (the interpreter's start and ``import numpy``, needed by both
to build the data, are outside the timed part). The two alternate, ``--repeats`` runs each, and
the medians are compared.

nnfin's time is broken down (medians over its runs): ``import torch``; the search (config,
folds, Optuna study in SQLite, the trials); the outputs (CSVs, best.toml) and their plots; the
refit (training) and the refit's files and plots. One more run under ``python -X importtime``
shows which imports the call pays for and where (that run is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GRID_TOML = """\
[data]
n = {n}
split = [1.0, 0.0, 0.0]

[train]
device = "cpu"
epochs = {epochs}
batch_size = 64
progress = false

[model]
activation = "sigmoid"
init = "sklearn"

[optim]
name = "adam"

[tune]
strategy = "grid"
folds = 5
seed = 0

[tune.space]
"model.width" = [6, 16, 32]
"optim.lr" = [1e-3, 1e-2]
"penalty.l2" = [0.0, 1e-4]
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------- the child processes


class Phases:
    """Wall time spent inside wrapped functions, by label (nested calls are not double counted
    within one label)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)


def child_nnfin(config: Path, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    t_torch = time.perf_counter() - start
    import importlib

    import nnfin

    # (nnfin.tune is also the function: the modules are fetched by name)
    app_fit, app_tune, plots, report = (importlib.import_module(f"nnfin.{m}") for m in
                                        ("app.fit", "app.tune", "plots", "tune.report"))

    phases = Phases()
    for name in ("history_figure", "params_figure"):
        phases.wrap(report, name, "plots")
    for name in ("loss_figure", "fit_figure", "save"):
        phases.wrap(plots, name, "plots")
    phases.wrap(report, "write_outputs", "outputs")
    phases.wrap(app_tune, "refit", "refit")
    phases.wrap(app_fit, "finish_run", "refit files")
    t_imports = time.perf_counter() - start - t_torch  # nnfin's modules (and matplotlib)
    res = nnfin.tune(config, overrides=[f"run.dir={json.dumps(str(out))}"])
    wall = time.perf_counter() - start
    assert res.run is not None and res.best_params is not None
    s = phases.spent
    # plots nest inside outputs (tune/plots) and inside finish_run (the refit's plots): split them
    tune_plots = _plots_in(out / "tune" / "plots")
    return {"wall_s": wall, "torch_s": t_torch, "imports_s": t_imports,
            "search_s": wall - t_torch - s.get("outputs", 0.0) - s.get("refit", 0.0),
            "outputs_s": s.get("outputs", 0.0), "refit_s": s.get("refit", 0.0),
            "refit_files_s": s.get("refit files", 0.0), "plots_s": s.get("plots", 0.0),
            "plots_tune": tune_plots, "best": res.best_params, "cv_mse": res.best_value}


def _plots_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def child_sklearn(n: int, epochs: int) -> dict[str, Any]:
    x, y = _cos_data(n)  # outside the timed part (it uses nnfin, hence torch)
    start = time.perf_counter()
    import warnings

    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t_imports = time.perf_counter() - start
    mlp = MLPRegressor(activation="logistic", solver="adam", batch_size=64, max_iter=epochs,
                       early_stopping=False, n_iter_no_change=epochs + 1, tol=0.0, shuffle=True,
                       random_state=0)
    est = TransformedTargetRegressor(make_pipeline(StandardScaler(), mlp), transformer=StandardScaler())
    grid = {"regressor__mlpregressor__hidden_layer_sizes": [(6, 6), (16, 16), (32, 32)],
            "regressor__mlpregressor__learning_rate_init": [1e-3, 1e-2],
            "regressor__mlpregressor__alpha": [0.0, 1e-4]}
    search = GridSearchCV(est, grid, scoring="neg_mean_squared_error", n_jobs=1,
                          cv=KFold(5, shuffle=True, random_state=0), refit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached, as intended
        search.fit(x, y.ravel())
    wall = time.perf_counter() - start
    b = search.best_params_
    best = {"model.width": b["regressor__mlpregressor__hidden_layer_sizes"][0],
            "optim.lr": b["regressor__mlpregressor__learning_rate_init"],
            "penalty.l2": b["regressor__mlpregressor__alpha"]}
    return {"wall_s": wall, "imports_s": t_imports, "best": best, "cv_mse": -search.best_score_}


def _cos_data(n: int) -> tuple[Any, Any]:
    """nnfin's ``[data] kind = "cos"`` rows (the same arrays nnfin trains on)."""
    from nnfin.config import load_config
    from nnfin.data import load_arrays

    x, y, _, _ = load_arrays(load_config(None, [f"data.n={n}", "data.split=[1.0, 0.0, 0.0]"]).data)
    return x, y


# ---------------------------------------------------------------- the parent


def run_child(kind: str, args: argparse.Namespace, tmp: Path, i: int, *,
              importtime: bool = False) -> dict[str, Any]:
    config = tmp / "grid.toml"
    out = tmp / f"run-{kind}-{i}"
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), __file__, "--child", kind,
           "--config", str(config), "--out", str(out), "--n", str(args.n), "--epochs", str(args.epochs)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{kind} run failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if importtime:
        res["importtime"] = proc.stderr
    return res


def top_imports(log: str, count: int = 12) -> tuple[float, list[tuple[str, float]]]:
    """The outermost imports of an ``-X importtime`` log that come after ``import torch``:
    their total and the biggest (cumulative seconds)."""
    out: list[tuple[str, float]] = []
    seen_torch = False
    for line in log.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m and not m.group(2):
            if seen_torch:
                out.append((m.group(3), int(m.group(1)) / 1e6))
            seen_torch = seen_torch or m.group(3) == "torch"
    return sum(s for _, s in out), sorted(out, key=lambda t: -t[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side (median)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--peers", default="nnfin,sklearn")
    parser.add_argument("--same-process", action="store_true",
                        help="run both calls in this one process, alternated, after one untimed "
                             "call of each (imports and first-call costs paid): the calls alone")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "nnfin":
        print(json.dumps(child_nnfin(Path(args.config), Path(args.out))))
        return
    if args.child == "sklearn":
        print(json.dumps(child_sklearn(args.n, args.epochs)))
        return

    peers = args.peers.split(",")
    if args.same_process:
        return same_process(args, peers)
    print(f"grid: 12 configs x 5 folds x {args.epochs} epochs, n = {args.n}, refit on all rows; "
          f"1 thread; {args.repeats} fresh-process runs of each, alternated")
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "grid.toml").write_text(GRID_TOML.format(n=args.n, epochs=args.epochs))
        for i in range(args.repeats):
            for p in peers:
                r = run_child(p, args, tmp, i)
                runs[p].append(r)
                print(f"  {p} run {i + 1}: {r['wall_s']:.2f} s", flush=True)
        profile = run_child("nnfin", args, tmp, 99, importtime=True) if "nnfin" in peers else None

    med = {p: statistics.median(r["wall_s"] for r in rs) for p, rs in runs.items()}
    print(f"\n{'peer':<9}{'median s':>10}   runs                     best (width, lr, L2)   CV MSE")
    for p, rs in runs.items():
        b = rs[0]["best"]
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in rs)
        print(f"{p:<9}{med[p]:>10.2f}   {walls:<24} ({b['model.width']}, {b['optim.lr']:g}, "
              f"{b['penalty.l2']:g})   {rs[0]['cv_mse']:.3e}")
    if "nnfin" in med and "sklearn" in med:
        print(f"\nnnfin.tune end to end: {med['sklearn'] / med['nnfin']:.1f}x faster than "
              f"GridSearchCV(MLPRegressor, refit=True) ({med['nnfin']:.2f} s vs {med['sklearn']:.2f} s)")
    if "nnfin" in med:
        walls = sorted(runs["nnfin"], key=lambda r: r["wall_s"])
        mid = walls[(len(walls) - 1) // 2]  # the median run (the lower one of an even count)

        def m(key: str) -> float:
            return mid[key]

        print("\nnnfin's time (its median run; plots are also inside outputs and refit files):")
        rows = [("import torch", m("torch_s")),
                ("import nnfin's modules (app.tune, app.fit, plots: matplotlib)", m("imports_s")),
                ("search: config, folds, study (SQLite), trials", m("search_s") - m("imports_s")),
                ("outputs: trials.csv, ranking.csv, best.toml, tune plots", m("outputs_s")),
                ("refit: build + train", m("refit_s") - m("refit_files_s")),
                ("refit files: metrics, model, history, plots", m("refit_files_s")),
                ("  of which plots (4 figures, drawn and saved)", m("plots_s"))]
        for label, value in rows:
            print(f"  {label:<64}{value:>7.2f} s")
        print(f"  {'total':<64}{m('wall_s'):>7.2f} s")
    if profile is not None:
        total, biggest = top_imports(profile["importtime"])
        print(f"\nimports the call pays for after torch: {total:.2f} s in all (one -X importtime "
              "run, slowed by the log; cumulative s, biggest first):")
        for name, secs in biggest:
            print(f"  {name:<40}{secs:>7.2f}")


def same_process(args: argparse.Namespace, peers: list[str]) -> None:
    """Both calls in this process (one thread each), after one untimed warm-up call of each."""
    import torch

    torch.set_num_threads(1)
    print(f"grid: 12 configs x 5 folds x {args.epochs} epochs, n = {args.n}, refit on all rows; "
          f"1 thread; one process: a warm-up call of each, then {args.repeats} timed calls, alternated")
    walls: dict[str, list[float]] = {p: [] for p in peers}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "grid.toml").write_text(GRID_TOML.format(n=args.n, epochs=args.epochs))
        for i in range(args.repeats + 1):
            for p in peers:
                r = child_nnfin(tmp / "grid.toml", tmp / f"run-{i}") if p == "nnfin" else \
                    child_sklearn(args.n, args.epochs)
                if i:
                    walls[p].append(r["wall_s"])
                print(f"  {p} {'warm-up' if not i else f'run {i}'}: {r['wall_s']:.2f} s", flush=True)
    med = {p: statistics.median(w) for p, w in walls.items()}
    for p, w in walls.items():
        print(f"{p:<9}{med[p]:>8.2f} s  ({', '.join(f'{v:.2f}' for v in w)})")
    if "nnfin" in med and "sklearn" in med:
        print(f"nnfin.tune call: {med['sklearn'] / med['nnfin']:.1f}x faster than "
              f"GridSearchCV(MLPRegressor, refit=True) in the same process")


if __name__ == "__main__":
    main()
