"""``nnfin data``: generate a finance dataset and write it to Parquet (or CSV).

* ``nnfin data`` or ``nnfin data --list`` - list the dataset kinds;
* ``nnfin data black-scholes --n 100000 --out bs.parquet --greeks`` - Black–Scholes
  prices (and Greeks) on Latin-hypercube samples of the paper's wide ranges;
* ``nnfin data heston --n 10000 --out h.parquet --set rho=-0.9,-0.3 --cos-n 1500``.

Parquet files carry the generator's metadata (kind, ranges, seed, ...) in their schema
metadata; CSV files hold the columns only. An existing ``--out`` needs ``--force``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nnfin.errors import ConfigError
from nnfin.memory import parse_count


def _print_kinds(console: Console) -> None:
    from nnfin.finance.datasets import describe_kinds

    table = Table(title="nnfin data NAME: dataset kinds", title_justify="left")
    for col in ("kind", "inputs -> targets", "ranges", "options"):
        table.add_column(col)
    for row in describe_kinds():
        opts = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "-"
        table.add_row(row["kind"], f"{', '.join(row['features'])} -> {', '.join(row['targets'])}",
                      " | ".join(row["presets"]), opts)
    console.print(table)
    console.print("example: nnfin data black-scholes --n 10000 --out bs.parquet --greeks")


def _summary(console: Console, df: Any, meta: dict[str, Any], out: Path, seconds: float) -> None:
    features, targets = set(meta["features"]), set(meta["targets"])
    console.print(f"{meta['kind']}: {len(df):,} rows x {len(df.columns)} columns written to "
                  f"{escape(str(out))} in {seconds:.2f} s")
    table = Table()
    for col in ("column", "role", "sampled range", "min", "max"):
        table.add_column(col, justify="left" if col in ("column", "role") else "right")
    for col in df.columns:
        role = "input" if col in features else "target" if col in targets else "extra"
        box = meta["ranges"].get(col)
        box_text = f"[{box[0]:g}, {box[1]:g}]" if box else ""
        table.add_row(str(col), role, box_text, f"{df[col].min():.6g}", f"{df[col].max():.6g}")
    console.print(table)
    notes = [f"seed {meta['seed']}", f"sampler {meta['sampler']}",
             f"ranges {meta['ranges_preset']}", f"option {meta['option']}"]
    if "N" in meta:
        notes.append(f"COS N={meta['N']} L={meta['L']:g}")
    if meta.get("dropped"):
        notes.append(f"{meta['dropped']:,} of {meta['n']:,} samples dropped "
                     f"(time value < {meta['min_time_value']:g})")
    console.print(", ".join(notes))
    if out.suffix.lower() == ".csv":
        console.print("note: CSV keeps no metadata (kind, ranges, seed); use .parquet to keep it")


def data(
    name: str | None = typer.Argument(
        None, help="Dataset kind: black-scholes | implied-vol | implied-vol-plain | heston."),
    n: int | None = typer.Option(None, "--n", "-n", parser=parse_count, metavar="INTEGER",
                                 help="Number of samples to draw (100000, or 1e5)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output file: .parquet (with metadata) or .csv."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler."),
    ranges: str = typer.Option("wide", "--ranges", help="Range preset: wide | narrow."),
    sampler: str = typer.Option("lhs", "--sampler", help="lhs (Latin hypercube) | uniform."),
    greeks: bool = typer.Option(
        False, "--greeks", help="black-scholes: add delta, gamma, vega, theta, rho columns; heston: "
                             "dV_d<input> for every input (exact, by autograd through COS)."),
    option: str = typer.Option("call", "--option", help="call | put."),
    set_: list[str] | None = typer.Option(
        None, "--set", "-s", metavar="NAME=LOW,HIGH",
        help="Override one column's range, e.g. --set sigma=0.1,0.5 (repeatable)."),
    cos_n: int | None = typer.Option(None, "--cos-n", help="heston: COS terms N (1500)."),
    cos_l: float | None = typer.Option(None, "--cos-l", help="heston: COS range width L (50)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
    list_: bool = typer.Option(False, "--list", help="List the dataset kinds and exit."),
) -> None:
    """Generate a finance dataset (Black–Scholes, implied volatility, Heston) to a file.

    Example: nnfin data black-scholes --n 100000 --out bs.parquet --greeks
    """
    from nnfin.finance.datasets import check_memory, generate, get_spec, parse_range_assignment
    from nnfin.finance.store import check_out_path, write_dataset

    console = Console(highlight=False)
    if list_ or name is None:
        _print_kinds(console)
        return
    get_spec(name)
    if n is None:
        raise ConfigError(f"nnfin data {name}: --n is required (the number of samples)")
    if out is None:
        raise ConfigError(f"nnfin data {name}: --out is required (a .parquet or .csv file)")
    overrides: dict[str, tuple[float, float]] = {}
    for item in set_ or []:
        col, box = parse_range_assignment(item)
        if col in overrides:
            raise ConfigError(f"--set {item!r}: {col!r} is given twice")
        overrides[col] = box
    kind_options: dict[str, Any] = {}
    for flag, key, value in (("--cos-n", "N", cos_n), ("--cos-l", "L", cos_l)):
        if value is not None:
            if name != "heston":
                raise ConfigError(f"{flag} {value!r} applies to kind 'heston' only, not {name!r}")
            kind_options[key] = value
    check_memory(name, n, kind_options, greeks=greeks,
                 fields={"n": "--n", "N": "--cos-n"})  # sizes that cannot fit: before any output
    check_out_path(out, force=force, field="--out")  # fail before the generation runs
    start = time.perf_counter()
    df, meta = generate(name, n=n, seed=seed, ranges=ranges, overrides=overrides,
                        sampler=sampler, greeks=greeks, option=option, **kind_options)
    write_dataset(df, meta, out, force=force, field="--out")
    _summary(console, df, meta, out, time.perf_counter() - start)
