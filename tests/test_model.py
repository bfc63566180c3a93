"""The PyTorch model: shapes, parameter counts, Caffe fidelity, state_dict loading."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgesqueeze.errors import WeightsError  # noqa: E402
from edgesqueeze.model import (  # noqa: E402
    count_parameters,
    squeezenet1_0,
    squeezenet1_1,
    squeezenet_from_metaparameters,
)
from edgesqueeze.weights import load_params  # noqa: E402

# torchvision's squeezenet1_0 state_dict prefixes, in order
TV_1_0 = ["features.0", "features.3", "features.4", "features.5", "features.7", "features.8",
          "features.9", "features.10", "features.12", "classifier.1"]
TV_1_1 = ["features.0", "features.3", "features.4", "features.6", "features.7", "features.9",
          "features.10", "features.11", "features.12", "classifier.1"]


def prefixes(model):
    seen = []
    for k in model.state_dict():
        p = k.rsplit(".", 2)[0] if ".squeeze." in k or ".expand" in k else k.rsplit(".", 1)[0]
        if p not in seen:
            seen.append(p)
    return seen


def test_parameter_counts():
    assert count_parameters(squeezenet1_0()) == 1_248_424
    assert count_parameters(squeezenet1_1()) == 1_235_496
    assert count_parameters(squeezenet_from_metaparameters()) == 1_248_424
    assert count_parameters(squeezenet1_0(bypass="complex")) == squeezenet1_0(bypass="complex").arch.num_parameters()


def test_state_dict_keys_are_torchvision_keys():
    assert prefixes(squeezenet1_0()) == TV_1_0
    assert prefixes(squeezenet1_1()) == TV_1_1


@pytest.mark.parametrize("factory,size,caffe", [(squeezenet1_0, 224, False), (squeezenet1_1, 224, False),
                                                (squeezenet1_0, 227, True)])
def test_forward_shapes(factory, size, caffe):
    m = factory(caffe=True) if caffe else factory()
    with torch.no_grad():
        feats = m.features(torch.zeros(2, 3, size, size))
        out = m(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 1000)
    assert tuple(feats.shape[1:]) == (512, 13, 13)


def test_simple_and_complex_bypass_run():
    for b in ("simple", "complex"):
        m = squeezenet1_0(bypass=b).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_final_pad_border_is_relu_bias_and_enters_the_average():
    """With conv10 weights zeroed, every output position is relu(bias): the padded model's
    average equals relu(bias), and a nonzero interior shows the 15x15 averaging."""
    m = squeezenet1_0(caffe=True).eval()
    conv10 = m.classifier[1]
    assert conv10.padding == (1, 1)
    with torch.no_grad():
        conv10.weight.zero_()
        conv10.bias.copy_(torch.linspace(-1, 1, 1000))
        y = m(torch.randn(1, 3, 227, 227))
        np.testing.assert_allclose(y[0].numpy(), np.maximum(np.linspace(-1, 1, 1000), 0), atol=1e-6)
        # interior 13x13 of constant 1 from a bias of 1 on top of weights: border still 1, so
        # check the count instead: a map whose interior is v and border b averages (169 v + 56 b)/225
        feats = m.features(torch.randn(1, 3, 227, 227))
        conv10.weight.zero_()
        conv10.weight[:, 0, 0, 0] = 1.0
        conv10.bias.zero_()
        y = m.classifier(feats).flatten()
        want = torch.relu(feats[0, 0]).sum() / 225.0
        assert torch.allclose(y, want.expand_as(y), atol=1e-5)


def test_ceil_mode_pooling():
    m = squeezenet1_0()
    pools = [p for p in m.features if isinstance(p, torch.nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.ceil_mode for p in pools)


def test_state_dict_roundtrip(tmp_path):
    m = squeezenet1_1()
    p = tmp_path / "sq11.pth"
    torch.save(m.state_dict(), p)
    arch, params = load_params(p)
    assert arch.name == "squeezenet1_1"
    for name, conv in m.named_convs():
        np.testing.assert_array_equal(params[name][0], conv.weight.detach().numpy())


def test_state_dict_wrong_shape_is_named(tmp_path):
    sd = squeezenet1_0().state_dict()
    sd["features.3.squeeze.weight"] = torch.zeros(8, 96, 1, 1)
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError, match=r"bad\.pth.*fire2\.squeeze"):
        load_params(p)


def test_state_dict_missing_key_and_garbage(tmp_path):
    sd = squeezenet1_0().state_dict()
    del sd["classifier.1.bias"]
    p = tmp_path / "missing.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError, match="classifier.1"):
        load_params(p)
    g = tmp_path / "garbage.pth"
    g.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="garbage.pth"):
        load_params(g)


def test_load_numpy_params_reports_every_problem():
    m = squeezenet1_0()
    params = m.numpy_params()
    params["conv1"] = (np.zeros((1, 3, 7, 7), np.float32), params["conv1"][1])
    del params["conv10"]
    with pytest.raises(WeightsError) as e:
        m.load_numpy_params(params)
    assert "conv1.weight" in str(e.value) and "conv10" in str(e.value)
