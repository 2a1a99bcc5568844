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
