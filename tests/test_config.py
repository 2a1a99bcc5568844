import pytest

from nnfin.config import Config, load_config
from nnfin.errors import ConfigError


def test_defaults_are_the_lecture_network():
    cfg = load_config(None)
    assert (cfg.data.kind, cfg.model.kind, cfg.model.neurons, cfg.model.activation) == (
        "cos", "mlp", [6, 6], "sigmoid")
    assert cfg.optim.name == "adam"


def test_overrides_parse_toml_values():
    cfg = load_config(None, ["optim.lr=1e-3", "model.neurons=[16, 8]", "data.kind=sin",
                             "data.scale=false", 'model.activation="tanh"'])
    assert cfg.optim.lr == 1e-3
    assert cfg.model.neurons == [16, 8]
    assert cfg.data.kind == "sin" and cfg.data.scale is False
    assert cfg.model.activation == "tanh"


def test_toml_roundtrip(tmp_path):
    cfg = load_config(None, ["train.iterations=50", "optim.name=sgd", "data.split=[0.8, 0.2]"])
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again == cfg
    assert again.train.epochs is None and again.train.iterations == 50


@pytest.mark.parametrize(("raw", "fragments"), [
    ({"modle": {}}, ["unknown section [modle]", "did you mean 'model'"]),
    ({"model": {"neurns": [3]}}, ["unknown key [model] neurns", "did you mean 'neurons'"]),
    ({"model": {"activation": "sigmod"}}, ["[model] activation = 'sigmod'", "'sigmoid'"]),
    ({"model": {"kind": "cnn"}}, ["[model] kind = 'cnn'", "mlp-low"]),
    ({"optim": {"name": "adamm"}}, ["[optim] name = 'adamm'", "did you mean 'adam'"]),
    ({"train": {"loss": "mze"}}, ["[train] loss = 'mze'"]),
    ({"train": {"batch_size": 0}}, ["[train] batch_size = 0"]),
    ({"optim": {"lr": -1}}, ["[optim] lr = -1"]),
    ({"optim": {"lr": "fast"}}, ["[optim] lr = 'fast'"]),
    ({"optim": {"betas": [0.9, 1.0]}}, ["[optim] betas", "index 1"]),
    ({"data": {"split": [0.5, 0.6]}}, ["[data] split"]),
    ({"data": {"low": 2.0, "high": 1.0}}, ["low = 2.0", "high = 1.0"]),
    ({"data": {"n": 0}}, ["[data] n = 0"]),
    ({"model": {"neurons": [4, 0]}}, ["[model] neurons"]),
    ({"train": {"device": "tpu"}}, ["[train] device = 'tpu'"]),
    ({"model": 3}, ["[model] must be a table"]),
])
def test_bad_values_name_field_and_value(raw, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg


@pytest.mark.parametrize("item", ["optim.lr", "lr=3", ".x=1"])
def test_bad_override_syntax(item):
    with pytest.raises(ConfigError, match="--set"):
        load_config(None, [item])


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nneurons = = [6, 6]\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*line 2"):
        load_config(path)
    path.write_text("[model]\nneurons = [6, 6\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*end of document, line 3"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_config_object_passes_through():
    cfg = Config()
    assert load_config(cfg, ["optim.lr=0.5"]).optim.lr == 0.5
    assert cfg.optim.lr != 0.5  # the original is not modified
