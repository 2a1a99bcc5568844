"""``nnfin data``: listing, writing Parquet/CSV, refusing to overwrite, one-line errors."""

from __future__ import annotations

import pytest

from nnfin.cli import main
from nnfin.finance import read_dataset


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error(capsys, argv: list[str], *fragments: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert "Traceback" not in captured.err + captured.out
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


@pytest.mark.parametrize("argv", [["data"], ["data", "--list"]])
def test_list_kinds(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == 0
    for kind in ("black-scholes", "implied-vol", "implied-vol-plain", "heston"):
        assert kind in out


def test_generate_parquet_with_metadata(capsys, tmp_path):
    path = tmp_path / "bs.parquet"
    code, out, err = run(capsys, "data", "black-scholes", "--n", "300", "--out", str(path),
                         "--seed", "4", "--ranges", "narrow", "--greeks", "--option", "put",
                         "--set", "sigma=0.1,0.4", "--sampler", "uniform")
    assert code == 0, err
    assert "300 rows" in out and "price" in out and "[0.1, 0.4]" in out
    df, meta = read_dataset(path)
    assert len(df) == 300 and "vega" in df.columns
    assert meta["seed"] == 4 and meta["option"] == "put" and meta["sampler"] == "uniform"
    assert meta["ranges"]["sigma"] == [0.1, 0.4] and meta["ranges"]["tau"] == [0.3, 0.95]


def test_refuses_to_overwrite_without_force(capsys, tmp_path):
    path = tmp_path / "iv.parquet"
    assert run(capsys, "data", "implied-vol", "--n", "50", "--out", str(path))[0] == 0
    before = path.read_bytes()
    assert_error(capsys, ["data", "implied-vol", "--n", "60", "--out", str(path)],
                 "already exists", "--force")
    assert path.read_bytes() == before
    code, out, _ = run(capsys, "data", "implied-vol", "--n", "60", "--out", str(path), "--force")
    assert code == 0 and "dropped" in out
    assert read_dataset(path)[1]["n"] == 60


def test_csv_output_says_it_has_no_metadata(capsys, tmp_path):
    path = tmp_path / "h.csv"
    code, out, err = run(capsys, "data", "heston", "--n", "10", "--out", str(path),
                         "--cos-n", "256", "--cos-l", "12")
    assert code == 0, err
    assert "no metadata" in out and "N=256" in out
    df, meta = read_dataset(path)
    assert len(df) == 10 and meta == {}


@pytest.mark.parametrize(("args", "fragments"), [
    (["blak-scholes", "--n", "5"], ["kind = 'blak-scholes'", "did you mean 'black-scholes'"]),
    (["black-scholes", "--n", "0"], ["n = 0"]),
    (["black-scholes", "--n", "-3"], ["n = -3"]),
    (["black-scholes"], ["--n is required"]),
    (["black-scholes", "--n", "5", "--out", None], ["--out is required"]),
    (["black-scholes", "--n", "5", "--ranges", "medium"], ["ranges = 'medium'"]),
    (["black-scholes", "--n", "5", "--set", "sigma=0.5,0.1"], ["ranges['sigma'] = (0.5, 0.1)"]),
    (["black-scholes", "--n", "5", "--set", "sigma=-0.5,0.1"], ["ranges['sigma']", "volatility"]),
    (["black-scholes", "--n", "5", "--set", "tau=-1,1"], ["ranges['tau'] = (-1.0, 1.0)"]),
    (["black-scholes", "--n", "5", "--set", "vol=0.1,0.2"], ["unknown column 'vol'"]),
    (["black-scholes", "--n", "5", "--set", "sigma=0.1"], ["--set 'sigma=0.1'"]),
    (["black-scholes", "--n", "5", "--set", "sigma=0.1,0.2", "--set", "sigma=0.2,0.3"],
     ["given twice"]),
    (["black-scholes", "--n", "5", "--sampler", "sobol"], ["sampler = 'sobol'"]),
    (["black-scholes", "--n", "5", "--option", "straddle"], ["option = 'straddle'"]),
    (["implied-vol", "--n", "5", "--greeks"], ["greeks", "implied-vol"]),
    (["black-scholes", "--n", "5", "--cos-n", "64"], ["--cos-n 64", "heston"]),
    (["heston", "--n", "5", "--cos-n", "1"], ["N = 1"]),
    (["black-scholes", "--n", "5", "--out", "x.txt"], ["'.txt'", ".parquet"]),
])
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, args, fragments):
    out = str(tmp_path / "o.parquet")
    argv = ["data", *args]
    if "--out" in argv:
        i = argv.index("--out")
        if argv[i + 1] is None:
            argv = argv[:i] + argv[i + 2:]
        else:
            argv[i + 1] = str(tmp_path / argv[i + 1])
    elif "--n" in argv:
        argv += ["--out", out]
    assert_error(capsys, argv, *fragments)
    assert not (tmp_path / "o.parquet").exists()
