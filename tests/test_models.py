import numpy as np
import pytest
import torch

from nnfin.config import ModelConfig
from nnfin.errors import ConfigError
from nnfin.models import MLP, MLPLow, Polynomial, build_model
from nnfin.models.mlp import ACTIVATION_FUNCTIONS


def _copy(src: MLP, dst: MLPLow) -> None:
    with torch.no_grad():
        for (w_src, b_src), (w_dst, b_dst) in zip(src.layers(), dst.layers(), strict=True):
            w_dst.copy_(w_src)
            b_dst.copy_(b_src)


@pytest.mark.parametrize("activation", sorted(ACTIVATION_FUNCTIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_low_and_high_level_are_identical(activation, dtype):
    torch.manual_seed(0)
    high = MLP(3, 2, [8, 5, 4], activation).to(dtype)
    low = MLPLow(3, 2, [8, 5, 4], activation).to(dtype)
    _copy(high, low)
    x = torch.randn(64, 3, dtype=dtype)
    out_h, out_l = high(x), low(x)
    assert torch.equal(out_h, out_l)
    out_h.square().sum().backward()
    out_l.square().sum().backward()
    linears = [m for m in high.forwardpass if isinstance(m, torch.nn.Linear)]
    for lin, (wl, bl) in zip(linears, low.layers(), strict=True):
        assert torch.equal(lin.weight.grad.T, wl.grad)  # (out, in) vs the slides' (in, out)
        assert torch.equal(lin.bias.grad, bl.grad)


def test_low_level_parameters_registered_as_on_the_slides():
    model = MLPLow(1, 1, [6, 6], "sigmoid", init="lecture")
    names = [n for n, _ in model.named_parameters()]
    assert names == ["w1", "b1", "w2", "b2", "w3", "b3"]
    assert model.w1.shape == (1, 6) and model.w2.shape == (6, 6) and model.w3.shape == (6, 1)
    # the lecture's init: torch.rand weights in [0, 1), zero biases
    assert float(model.w2.min()) >= 0 and float(model.w2.max()) < 1
    assert float(model.b2.abs().max()) == 0
    assert len(list(model.parameters())) == 6


def test_high_level_layers_reachable_as_on_the_slides():
    model = MLP(1, 1, [6, 6])
    assert model.layer2.weight.shape == (6, 6)
    assert isinstance(model.forwardpass, torch.nn.Sequential)


@pytest.mark.parametrize("init", ["default", "lecture", "xavier", "xavier-normal", "kaiming",
                                  "kaiming-normal"])
@pytest.mark.parametrize("cls", [MLP, MLPLow])
def test_init_schemes_have_the_right_scale(init, cls):
    torch.manual_seed(0)
    model = cls(200, 1, [300], "relu", init)
    w = model.layers()[0][0]  # (in=200, out=300)
    fan_in, fan_out = 200, 300
    expected = {
        "default": (1 / fan_in) ** 0.5 / 3**0.5,  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        "lecture": (1 / 12 + 1 / 4) ** 0.5,  # U(0, 1): E[w^2] = 1/3
        "xavier": 2**0.5 * (2 / (fan_in + fan_out)) ** 0.5,  # gain sqrt(2) for relu
        "xavier-normal": 2**0.5 * (2 / (fan_in + fan_out)) ** 0.5,
        "kaiming": (2 / fan_in) ** 0.5,
        "kaiming-normal": (2 / fan_in) ** 0.5,
    }[init]
    rms = float(w.square().mean().sqrt())
    assert abs(rms - expected) / expected < 0.05, (rms, expected)


@pytest.mark.parametrize("activation,factor", [("sigmoid", 2.0), ("tanh", 6.0), ("relu", 6.0)])
@pytest.mark.parametrize("cls", [MLP, MLPLow])
def test_sklearn_init_draws_like_scikit_learn(cls, activation, factor):
    """Against scikit-learn's own initialiser: the same bound, for weights and biases."""
    from sklearn.neural_network import MLPRegressor

    mlp = MLPRegressor(activation="logistic" if activation == "sigmoid" else activation)
    mlp._random_state = np.random.RandomState(0)
    coef, intercept = mlp._init_coef(200, 300, np.float64)
    torch.manual_seed(0)
    w, b = cls(200, 1, [300], activation, "sklearn").layers()[0]
    bound = (factor / 500) ** 0.5
    for mine, theirs in ((w, coef), (b, intercept)):
        mine = mine.detach().double().numpy()
        assert np.abs(mine).max() <= bound and np.abs(theirs).max() <= bound
        assert np.abs(mine).max() > 0.99 * bound and np.abs(theirs).max() > 0.99 * bound
        assert abs(mine.std() - theirs.std()) < 0.05 * theirs.std()


def test_polynomial_draws_coefficients_as_the_lecture():
    torch.manual_seed(0)
    dtype = torch.float
    a = torch.randn((), dtype=dtype)
    b = torch.randn((), dtype=dtype)
    c = torch.randn((), dtype=dtype)
    d = torch.randn((), dtype=dtype)
    torch.manual_seed(0)
    model = Polynomial(3)
    assert torch.equal(model.coefficients.detach(), torch.stack([a, b, c, d]))
    x = torch.linspace(-1, 2, 7).reshape(-1, 1)
    torch.testing.assert_close(model(x), (a + b * x + c * x**2 + d * x**3).detach())


def test_polynomial_formula():
    model = Polynomial(3)
    model.coefficients.data = torch.tensor([1.068, -0.146, -0.484, 0.102])
    assert model.formula() == "y = 1.068 - 0.146x - 0.484x^2 + 0.102x^3"


def test_build_model_kinds():
    for kind, cls in (("mlp", MLP), ("mlp-low", MLPLow), ("polynomial", Polynomial)):
        assert isinstance(build_model(ModelConfig(kind=kind), in_dim=1, out_dim=1), cls)


def test_polynomial_refuses_several_inputs():
    with pytest.raises(ConfigError, match="one input"):
        build_model(ModelConfig(kind="polynomial"), in_dim=3, out_dim=1)
