"""The command line starts without loading torch: each command imports what it needs when run."""

from __future__ import annotations

import subprocess
import sys


def test_registering_every_command_loads_neither_torch_nor_pandas():
    code = ("import sys; from nnfin.cli import _register; _register(); "
            "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_finance_package_lists_every_name_it_imports_on_use():
    import nnfin.finance as finance

    assert sorted(finance.__all__) == sorted(finance._NAMES)
    for name in finance.__all__:
        assert getattr(finance, name) is not None


def test_a_fit_loads_neither_scikit_learn_nor_scipy(tmp_path):
    """``nnfin fit`` on the lecture's problem: its metrics need neither (~0.8 s to import)."""
    code = ("import json, sys, nnfin; nnfin.fit(overrides=['train.epochs=2', 'data.n=200', "
            "'run.dir=' + json.dumps(sys.argv[1])]); "
            "print(sorted(m for m in ('sklearn', 'scipy', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
