"""``nnfin fit`` start-up: from launching the command to its first training step, next to
``python -c "import torch"``.

Run (from the repository root)::

    .venv/bin/python benchmarks/startup.py             # median of 5 of each
    .venv/bin/python benchmarks/startup.py --repeats 9 --modules

Each measurement is a fresh process started with ``subprocess``; the clock starts just before
the launch, in this process. Measured:

* ``python -c "import torch"`` - the floor: what any PyTorch command pays;
* ``nnfin --help`` - the command line alone;
* ``nnfin fit`` to its first step - ``nnfin fit --set train.epochs=1 -o <tmp>`` as typed (the
  lecture's default network on cos(x)), run by ``python -c`` with a hook on
  ``Trainer.fit`` that reports the time and exits: parsing, config, data, model, optimizer,
  the run folder and its config.toml, up to the first batch;
* the whole ``nnfin fit --set train.epochs=1`` (its files, metrics and plots included).

``--modules`` also lists which heavy libraries each command has imported by then (pandas,
optuna, scikit-learn, scipy, matplotlib, torch._dynamo, rich's progress bar, pyarrow).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("pandas", "optuna", "sklearn", "scipy", "matplotlib", "torch._dynamo", "pyarrow",
         "sqlalchemy", "torch")

# ``nnfin fit`` with a hook: when nnfin.train.loop is imported, Trainer.fit is replaced by a
# function that prints the wall clock (and the heavy modules loaded) and exits at once
HOOKED_FIT = """
import importlib.abc, importlib.machinery, json, os, sys, time
HEAVY = {heavy!r}
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "nnfin.train.loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            def first_step(self, *args, **kwargs):
                print("FIRST_STEP " + json.dumps({{"t": time.time(),
                      "loaded": [m for m in HEAVY if m in sys.modules]}}), flush=True)
                os._exit(0)
            module.Trainer.fit = first_step
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Hook())
sys.argv = ["nnfin", *{argv!r}]
from nnfin.cli import main
main(sys.argv[1:])
"""

MODULES = "import sys, json; print('LOADED ' + json.dumps([m for m in {heavy!r} if m in sys.modules]))"

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def nnfin_script() -> str:
    return str(Path(sys.executable).with_name("nnfin"))


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.time()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False)
    wall = time.time() - start
    if proc.returncode:
        sys.exit(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_STEP "):
            return json.loads(line.split(" ", 1)[1])["t"] - start, line
    return wall, proc.stdout


def loaded(code: str) -> list[str]:
    """Heavy modules loaded after ``code`` runs (in a fresh interpreter)."""
    out = subprocess.run([sys.executable, "-c", code + "\n" + MODULES.format(heavy=HEAVY)], env=ENV,
                         capture_output=True, text=True, check=False).stdout
    return json.loads(out.split("LOADED ", 1)[1]) if "LOADED " in out else ["(failed)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modules", action="store_true", help="list the heavy modules each loads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fit_args = lambda i, tag: ["fit", "--set", "train.epochs=1", "-q", "-o", str(tmp / f"{tag}{i}")]  # noqa: E731
        cases = {
            'python -c "import torch"': lambda i: [sys.executable, "-c", "import torch"],
            "nnfin --help": lambda i: [nnfin_script(), "--help"],
            "nnfin fit: to the first step": lambda i: [
                sys.executable, "-c", HOOKED_FIT.format(heavy=HEAVY, argv=fit_args(i, "a"))],
            "nnfin fit --set train.epochs=1 (all)": lambda i: [nnfin_script(), *fit_args(i, "b")],
        }
        walls: dict[str, list[float]] = {name: [] for name in cases}
        first_step_line = ""
        for i in range(args.repeats):  # alternated, so that a drift of the machine hits all
            for name, cmd in cases.items():
                wall, out = timed(cmd(i))
                walls[name].append(wall)
                if name.startswith("nnfin fit: to"):
                    first_step_line = out
    med = {name: statistics.median(w) for name, w in walls.items()}
    torch_s = med['python -c "import torch"']
    print(f"start-up, median of {args.repeats} fresh processes each (OMP_NUM_THREADS=1):")
    for name, w in walls.items():
        extra = "" if name.startswith("python") else f"   {med[name] - torch_s:+.2f} s on top of torch"
        print(f"  {name:<40}{med[name]:>6.2f} s  [{min(w):.2f}, {max(w):.2f}]{extra}")
    print(f"nnfin fit reaches its first step {med['nnfin fit: to the first step'] / torch_s:.2f}x "
          "the time of importing torch")
    if args.modules:
        hook = json.loads(first_step_line.split(" ", 1)[1])["loaded"] if first_step_line else []
        print("\nheavy modules loaded:")
        help_code = ("import sys\nsys.argv = ['nnfin', '--help']\nfrom nnfin.cli import main\n"
                     "try:\n    main()\nexcept SystemExit:\n    pass")
        print(f"  {'nnfin --help':<32}{', '.join(loaded(help_code)) or '-'}")
        print(f"  {'nnfin fit, at its first step':<32}{', '.join(hook) or '-'}")


if __name__ == "__main__":
    main()
