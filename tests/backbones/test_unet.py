import pytest
import torch
import torch.nn.functional as F

from geodiff.backbones import UNet
from geodiff.backbones.layers import SelfAttention, crop, group_norm, pad_to_multiple
from geodiff.errors import ConfigError
from geodiff.testing.backbones import BackboneContract, fill_zero_parameters

TINY = {"base_channels": 8, "channel_mults": (1, 2, 2), "num_res_blocks": 1, "attention_levels": (-1,)}


class TestUNetContract(BackboneContract):
    backbone_cls = UNet
    config = TINY
    registry_name = "unet"
    parameter_range = (20_000, 200_000)
    roll_equivariant = True


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_global_one_degree_grid():
    config = {"base_channels": 8, "channel_mults": (1, 2, 2, 2), "num_res_blocks": 1, "periodic_lon": True}
    net = fill_zero_parameters(UNet(in_channels=1, **config))
    x = torch.randn(1, 1, 173, 360)
    with torch.no_grad():
        out = net(x, torch.tensor([0.5]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_roll_by_a_non_multiple_is_not_promised():
    # documents the limit of the equivariance: shifts must be multiples of the downsampling factor
    torch.manual_seed(0)
    net = fill_zero_parameters(UNet(in_channels=1, periodic_lon=True, **TINY)).eval()
    assert net.downsampling_factor == 4
    x = torch.randn(1, 1, 8, 32)
    with torch.no_grad():
        assert (net(x.roll(2, -1), torch.zeros(1)) - net(x, torch.zeros(1)).roll(2, -1)).abs().max() > 1e-4


def test_parameter_count_scales_with_width():
    small = count(UNet(in_channels=3, **TINY))
    wide = count(UNet(in_channels=3, **{**TINY, "base_channels": 16}))
    assert 3.5 < wide / small < 4.1  # convolutions dominate: quadratic in width


def test_attention_placement():
    def attention_blocks(**kw):
        return sum(isinstance(m, SelfAttention) for m in UNet(in_channels=1, **{**TINY, **kw}).modules())

    # encoder: num_res_blocks per level, decoder: num_res_blocks + 1 per level, plus the middle one
    assert attention_blocks() == 1 + 2 + 1
    assert attention_blocks(attention_levels=(), mid_attention=False) == 0
    assert attention_blocks(attention_levels=(1, 2), mid_attention=False) == 2 * (1 + 2)


def test_fourier_embedding_round_trip(tmp_path):
    net = fill_zero_parameters(UNet(in_channels=2, embedding_type="fourier", **TINY)).eval()
    net.save_pretrained(tmp_path)
    loaded = UNet.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 2, 9, 20)
    with torch.no_grad():
        assert torch.equal(loaded(x, torch.tensor([0.3])), net(x, torch.tensor([0.3])))


def test_dropout_with_checkpointing_replays_the_same_masks():
    plain = fill_zero_parameters(UNet(in_channels=2, dropout=0.2, **TINY)).train()
    checkpointed = UNet(in_channels=2, dropout=0.2, gradient_checkpointing=True, **TINY).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 2, 9, 20)
    grads = []
    for net in (plain, checkpointed):
        torch.manual_seed(3)
        net(x, torch.tensor([0.1, 0.9])).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("channel_mults", ()),
        ("channel_mults", (1, 0)),
        ("attention_levels", (3,)),
        ("attention_levels", (-4,)),
        ("embedding_type", "learned"),
        ("dropout", 1.0),
        ("base_channels", 2),
        ("num_res_blocks", 0),
        ("in_channels", 0),
        ("cond_channels", -1),
    ],
)
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key.split("_")[0]):
        UNet(**{"in_channels": 1, **TINY, key: value})


def test_group_norm_adapts_to_small_channel_counts():
    assert [group_norm(c).num_groups for c in (1, 4, 8, 12, 24, 64, 256)] == [1, 1, 2, 3, 6, 16, 32]
    assert group_norm(48, 32).num_groups == 12


@pytest.mark.parametrize(("height", "width", "multiple"), [(45, 90, 4), (17, 33, 8), (2, 3, 8), (1, 1, 4), (16, 32, 4)])
@pytest.mark.parametrize("periodic_lon", [False, True])
def test_pad_to_multiple(height, width, multiple, periodic_lon):
    x = torch.randn(2, 3, height, width)
    padded, pads = pad_to_multiple(x, multiple, periodic_lon=periodic_lon)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert torch.equal(crop(padded, pads), x)
    top, bottom, left, right = pads
    if max(top, bottom) < height and max(left, right) < width:  # torch's own padding covers these widths
        expected = F.pad(x, (0, 0, top, bottom), mode="reflect") if top or bottom else x
        expected = F.pad(expected, (left, right, 0, 0), mode="circular" if periodic_lon else "reflect")
        assert torch.equal(padded, expected)
