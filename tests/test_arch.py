"""The SqueezeNet family's dimensions against the paper (Table 1) and torchvision."""

import pytest

from edgesqueeze.arch import (
    Bypass,
    metaparameter_arch,
    pool_output_size,
    squeezenet1_0_arch,
    squeezenet1_1_arch,
)
from edgesqueeze.errors import OptionError
from edgesqueeze.graph import OpKind, lower

# Paper Table 1 (v1.0): (squeeze, expand1x1, expand3x3) of fire2..fire9
TABLE1 = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
          (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]


def widths(arch):
    return [(f.squeeze, f.expand1x1, f.expand3x3) for f in arch.fires]


def test_v1_0_matches_table1():
    a = squeezenet1_0_arch()
    assert widths(a) == TABLE1
    assert (a.conv1.out_channels, a.conv1.kernel, a.conv1.stride) == (96, 7, 2)
    assert a.pool_after == ("conv1", "fire4", "fire8")
    assert a.num_parameters() == 1_248_424  # torchvision squeezenet1_0


def test_v1_1_dimensions():
    a = squeezenet1_1_arch()
    assert widths(a) == TABLE1
    assert (a.conv1.out_channels, a.conv1.kernel) == (64, 3)
    assert a.pool_after == ("conv1", "fire3", "fire5")
    assert a.num_parameters() == 1_235_496  # torchvision squeezenet1_1


def test_fire_inputs_chain():
    for a in (squeezenet1_0_arch(), squeezenet1_1_arch()):
        prev = a.conv1.out_channels
        for f in a.fires:
            assert f.in_channels == prev
            prev = f.out_channels
        assert a.conv10.in_channels == 512


def test_metaparameters_reproduce_v1_0_exactly():
    m = metaparameter_arch(base_e=128, incr_e=128, pct3x3=0.5, freq=2, sr=0.125)
    v = squeezenet1_0_arch()
    assert m.fires == v.fires
    assert m.conv1 == v.conv1 and m.pool_after == v.pool_after
    assert m.num_parameters() == v.num_parameters()


def test_metaparameters_change_widths():
    m = metaparameter_arch(sr=0.75, pct3x3=0.25, freq=1, incr_e=64)
    # e_i = 128 + 64 i; squeeze = 0.75 e_i; 3x3 = 0.25 e_i
    assert widths(m)[0] == (96, 96, 32)
    assert widths(m)[3] == (240, 240, 80)
    assert m.num_parameters() > squeezenet1_0_arch().num_parameters()


@pytest.mark.parametrize("kw", [dict(sr=0), dict(sr=1.5), dict(pct3x3=-0.1), dict(freq=0), dict(base_e=0)])
def test_bad_metaparameters_named(kw):
    with pytest.raises(OptionError) as e:
        metaparameter_arch(**kw)
    assert list(kw)[0].lower() in str(e.value).lower()


def test_bypass_variants():
    simple = squeezenet1_0_arch(bypass="simple")
    assert [f.index for f in simple.fires if f.bypass is Bypass.SIMPLE] == [3, 5, 7, 9]
    assert simple.num_parameters() == 1_248_424  # identity bypass adds nothing
    cx = squeezenet1_0_arch(bypass=Bypass.COMPLEX)
    assert [f.index for f in cx.fires if f.bypass is Bypass.COMPLEX] == [2, 4, 6, 8]
    # 1x1 bypass convs: 96->128, 128->256, 256->384, 384->512 (+ biases)
    extra = sum(i * o + o for i, o in ((96, 128), (128, 256), (256, 384), (384, 512)))
    assert cx.num_parameters() == 1_248_424 + extra
    with pytest.raises(OptionError, match="bypass='diagonal'"):
        squeezenet1_0_arch(bypass="diagonal")


def test_caffe_ceil_pooling_and_final_pad_shapes():
    s = squeezenet1_0_arch(caffe=True).shapes()
    assert s["conv1"] == (96, 111, 111)
    assert s["pool1"][1:] == (55, 55) and s["pool4"][1:] == (27, 27) and s["pool8"][1:] == (13, 13)
    assert s["conv10"] == (1000, 15, 15)  # pad 1 on the 13x13 map


def test_pool_output_size_ceil_vs_floor():
    assert pool_output_size(111, 3, 2, True) == 55
    assert pool_output_size(56, 3, 2, True) == 28
    assert pool_output_size(56, 3, 2, False) == 27
    assert pool_output_size(6, 3, 2, True) == 3 and pool_output_size(6, 3, 2, False) == 2
    # ceil never adds a window that starts past the input (PyTorch/Caffe rule)
    assert pool_output_size(5, 2, 2, True, pad=1) == 3


def test_lowered_graph():
    nodes = lower(squeezenet1_0_arch(bypass="complex"))
    kinds = [n.kind for n in nodes]
    assert kinds.count(OpKind.CONV) == len(squeezenet1_0_arch(bypass="complex").convs())
    assert kinds.count(OpKind.CONCAT) == 8 and kinds.count(OpKind.ADD) == 8
    assert kinds.count(OpKind.MAXPOOL) == 3 and kinds[-1] is OpKind.MEAN
    names = {n.name for n in nodes}
    for n in nodes:  # every input is produced before it is used
        for i in n.inputs:
            assert i == "input" or i in names


# ---------------------------------------------------------------- channel order


def test_with_channel_order_reverses_conv1_and_the_mean():
    """The model turned to RGB computes on the reversed image exactly what the BGR one computes
    (conv1 is the only layer that sees the channels; the mean/std are reversed with it)."""
    from dataclasses import replace

    import numpy as np

    from edgesqueeze.arch import DEFAULT_FILE_CHANNEL_ORDER, with_channel_order
    from test_quant import PRE, float_forward, tiny_arch, tiny_params

    arch = replace(tiny_arch(), preprocess=replace(PRE, std=(1.0, 2.0, 4.0)))
    params = tiny_params(arch)
    assert arch.preprocess.channel_order == "BGR" and DEFAULT_FILE_CHANNEL_ORDER == "RGB"
    rgb, turned = with_channel_order(arch, params, "rgb")
    assert rgb.preprocess.channel_order == "RGB"
    assert rgb.preprocess.mean == arch.preprocess.mean[::-1] and rgb.preprocess.std == (4.0, 2.0, 1.0)
    np.testing.assert_array_equal(turned["conv1"][0], params["conv1"][0][:, ::-1])
    assert all(turned[k] is params[k] for k in params if k != "conv1")  # nothing else touched
    px = np.random.default_rng(0).integers(0, 256, (3, 35, 35, 3), dtype=np.uint8)
    want = float_forward(arch, params, px)["logits"]
    got = float_forward(rgb, turned, np.ascontiguousarray(px[..., ::-1]))["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert with_channel_order(arch, params, "BGR") == (arch, params)  # already in that order
    assert with_channel_order(arch, params, None) == (arch, params)
    back, again = with_channel_order(rgb, turned, "BGR")
    assert back == arch and np.array_equal(again["conv1"][0], params["conv1"][0])
    with pytest.raises(OptionError, match="RGB or BGR"):
        with_channel_order(arch, params, "GBR")
