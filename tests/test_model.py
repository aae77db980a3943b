import torch

from thesis_lib.config import THESIS
from thesis_lib.model import StyleNet, count_parameters, layer_shapes


def test_layer_shapes_match_thesis():
    shapes = layer_shapes(StyleNet(), batch=2)
    assert shapes["input_norm"] == (2, 1, 40000)
    assert shapes["conv1"] == (2, 8, 19997) and shapes["norm1"] == (2, 8, 19997)
    assert shapes["conv2"] == (2, 8, 4992)
    assert shapes["conv3"] == (2, 8, 1217)
    assert shapes["fc"] == (2, 256) and shapes["out"] == (2, 2)
    assert THESIS.conv_output_lengths() == [19997, 4992, 1217]


def test_parameter_count():
    # 8*1*8+8 + 8*8*32+8 + 8*8*128+8 + (8*1217)*256+256 + 256*2+2, plus 2 * (1+8+8+8) batch-norm affine
    expected = 72 + 2056 + 8200 + 9736 * 256 + 256 + 514 + 2 * 25
    assert count_parameters(StyleNet()) == expected


def test_initialisation_glorot_and_zero_bias():
    torch.manual_seed(0)
    m = StyleNet()
    conv2 = m.conv_layers()[1]
    limit = (6 / (8 * 32 + 8 * 32)) ** 0.5
    assert conv2.weight.abs().max() <= limit and conv2.weight.abs().max() > 0.9 * limit
    assert all(torch.all(c.bias == 0) for c in m.conv_layers())
    bn = m.body.input_norm
    assert bn.eps == 1e-4 and bn.momentum == 0.1


def test_features_by_name_and_n_styles():
    m = StyleNet(n_styles=5).eval()
    x = torch.randn(3, 40000)
    feats = m.features(x, ["conv1", "conv3", "out"])
    assert feats["conv1"].shape == (3, 8, 19997) and (feats["conv1"] >= 0).all()  # after ReLU
    assert torch.allclose(feats["out"], m(x), atol=1e-6)
    assert m.predict_proba(x).sum(1).allclose(torch.ones(3))
    try:
        m.features(x, "conv9")
    except KeyError as exc:
        assert "conv9" in str(exc)
    else:
        raise AssertionError("unknown layer accepted")
