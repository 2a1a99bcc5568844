"""Dataset generation: sampling, presets, metadata, Parquet/CSV storage, input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nnfin.errors import ConfigError, DataError, NNFinError, WriteError
from nnfin.finance import FEATURES, KINDS, TARGETS, generate, read_dataset, write_dataset
from nnfin.finance.datasets import parse_range_assignment, resolve_ranges
from nnfin.finance.sampling import sample, unit_sample


def test_lhs_is_stratified_and_seeded():
    u = unit_sample(3, n=50, seed=9)
    for j in range(3):  # one point in each of the 50 strata of every dimension
        assert sorted(np.floor(u[:, j] * 50).astype(int)) == list(range(50))
    np.testing.assert_array_equal(u, unit_sample(3, n=50, seed=9))
    assert not np.array_equal(u, unit_sample(3, n=50, seed=10))
    v = unit_sample(3, n=50, seed=9, sampler="uniform")
    assert v.shape == (50, 3) and ((v >= 0) & (v < 1)).all()


def test_sample_respects_ranges():
    cols = sample({"a": (-1.0, 2.0), "b": (5.0, 6.0)}, n=200, seed=0)
    assert (cols["a"] >= -1).all() and (cols["a"] < 2).all() and (cols["b"] >= 5).all()


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_generates_its_features_and_targets(kind):
    kw = {"N": 128, "L": 12} if kind == "heston" else {}
    df, meta = generate(kind, n=64, seed=1, **kw)
    assert meta["kind"] == kind and meta["n"] == 64 and meta["seed"] == 1
    assert meta["features"] == FEATURES[kind] and meta["targets"] == TARGETS[kind]
    assert set(FEATURES[kind] + TARGETS[kind]) <= set(df.columns)
    assert meta["columns"] == list(df.columns) and meta["rows"] == len(df)
    assert meta["generator_version"] >= 1 and meta["sampler"] == "lhs"
    assert all(df[c].dtype == np.float64 for c in df.columns)
    again, _ = generate(kind, n=64, seed=1, **kw)
    pd.testing.assert_frame_equal(df, again)


def test_presets_and_overrides():
    df, meta = generate("black-scholes", n=500, seed=0, ranges="narrow",
                        overrides={"sigma": (0.2, 0.3)})
    assert meta["ranges"] == {"moneyness": [0.5, 1.5], "tau": [0.3, 0.95],
                              "r": [0.03, 0.08], "sigma": [0.2, 0.3]}
    assert df["sigma"].between(0.2, 0.3).all() and df["tau"].between(0.3, 0.95).all()
    wide, _ = resolve_ranges("black-scholes")
    assert wide == {"moneyness": (0.4, 1.6), "tau": (0.2, 1.1), "r": (0.02, 0.1),
                    "sigma": (0.01, 1.0)}
    custom, preset = resolve_ranges("heston", {"rho": [-0.5, 0.5]})
    assert preset == "custom" and custom["rho"] == (-0.5, 0.5) and custom["v0"] == (0.05, 0.5)


def test_greeks_columns_and_puts():
    df, meta = generate("black-scholes", n=100, seed=0, greeks=True, option="put")
    assert list(df.columns) == ["moneyness", "tau", "r", "sigma", "price",
                                "delta", "gamma", "vega", "theta", "rho"]
    assert meta["option"] == "put" and meta["greeks"] is True
    assert (df["delta"] <= 0).all() and (df["rho"] <= 0).all()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_read_round_trip(tmp_path, suffix):
    df, meta = generate("heston", n=20, seed=3, N=256, L=12)
    path = write_dataset(df, meta, tmp_path / f"h{suffix}")
    back, meta_back = read_dataset(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert meta_back == (meta if suffix == ".parquet" else {})
    with pytest.raises(WriteError, match="already exists"):
        write_dataset(df, meta, path)
    write_dataset(df.iloc[:3], meta, path, force=True)
    assert len(read_dataset(path)[0]) == 3


def test_parquet_metadata_is_plain_json_for_other_tools(tmp_path):
    import json

    import pyarrow.parquet as pq

    df, meta = generate("implied-vol", n=50, seed=0)
    write_dataset(df, meta, tmp_path / "iv.parquet")
    stored = json.loads(pq.read_schema(tmp_path / "iv.parquet").metadata[b"nnfin"])
    assert stored["kind"] == "implied-vol" and stored["ranges"]["sigma"] == [0.01, 1.0]
    assert pd.read_parquet(tmp_path / "iv.parquet").shape == df.shape


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and isinstance(exc.value, NNFinError)
    return msg


@pytest.mark.parametrize(("kwargs", "fragments"), [
    ({"kind": "blak-scholes"}, ["kind = 'blak-scholes'", "did you mean 'black-scholes'"]),
    ({"n": 0}, ["n = 0"]),
    ({"n": -5}, ["n = -5"]),
    ({"n": 2.5}, ["n = 2.5"]),
    ({"seed": -1}, ["seed = -1"]),
    ({"ranges": "medium"}, ["ranges = 'medium'", "wide, narrow"]),
    ({"overrides": {"sigma": (0.5, 0.1)}}, ["ranges['sigma'] = (0.5, 0.1)", "low must be below"]),
    ({"overrides": {"tau": (0.3, 0.3)}}, ["ranges['tau'] = (0.3, 0.3)"]),
    ({"overrides": {"sigma": (-0.1, 0.5)}}, ["ranges['sigma'] = (-0.1, 0.5)", "volatility"]),
    ({"overrides": {"tau": (-1.0, 1.0)}}, ["ranges['tau'] = (-1.0, 1.0)", "maturity"]),
    ({"overrides": {"sigmaa": (0.1, 0.2)}}, ["'sigmaa'", "did you mean 'sigma'"]),
    ({"overrides": {"sigma": "abc"}}, ["ranges['sigma'] = 'abc'"]),
    ({"overrides": {"sigma": (0.1, float("nan"))}}, ["ranges['sigma']", "finite"]),
    ({"sampler": "sobol"}, ["sampler = 'sobol'", "lhs, uniform"]),
    ({"option": "straddle"}, ["option = 'straddle'", "call, put"]),
    ({"greeks": True, "kind": "implied-vol"}, ["greeks", "'implied-vol'"]),
    ({"kind": "heston", "overrides": {"rho": (-1.5, 0.0)}}, ["ranges['rho']", "[-1, 1]"]),
    ({"kind": "heston", "overrides": {"kappa": (-1.0, 1.0)}}, ["ranges['kappa']", ">= 0"]),
    ({"kind": "heston", "overrides": {"v0": (0.0, 0.1)}}, ["ranges['v0']", "> 0"]),
    ({"kind": "heston", "ranges": "narrow"}, ["ranges = 'narrow'", "wide"]),
    ({"bogus": 1}, ["unknown option 'bogus'"]),
])
def test_bad_input_gives_one_line_errors(kwargs, fragments):
    kwargs = {"kind": "black-scholes", "n": 10, **kwargs}
    kind = kwargs.pop("kind")
    with pytest.raises(ConfigError) as exc:
        generate(kind, **kwargs)
    msg = _one_line(exc)
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_range_assignment_parsing():
    assert parse_range_assignment(" tau=0.1,1e-1 ") == ("tau", (0.1, 0.1))
    for bad in ["sigma", "sigma=0.1", "sigma=a,b", "=0.1,0.2", "sigma=1,2,3"]:
        with pytest.raises(ConfigError) as exc:
            parse_range_assignment(bad)
        assert repr(bad) in _one_line(exc)


def test_file_errors(tmp_path):
    df, meta = generate("black-scholes", n=5)
    with pytest.raises(WriteError, match=r"'\.txt'"):
        write_dataset(df, meta, tmp_path / "a.txt")
    with pytest.raises(WriteError, match="does not exist"):
        write_dataset(df, meta, tmp_path / "missing" / "a.parquet")
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError) as exc:
        read_dataset(tmp_path / "bad.parquet")
    assert "cannot be read" in _one_line(exc)
