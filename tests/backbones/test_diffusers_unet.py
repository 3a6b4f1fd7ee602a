import pytest
import torch

from geodiff.backbones import DiffusersUNet
from geodiff.errors import ConfigError
from geodiff.testing.backbones import BackboneContract

TINY = {
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 4,
    "attention_head_dim": 8,
}


class TestDiffusersUNetContract(BackboneContract):
    backbone_cls = DiffusersUNet
    config = TINY
    registry_name = "diffusers_unet"
    parameter_range = (10_000, 200_000)
    roll_equivariant = False  # diffusers pads its convolutions with zeros


def test_config_records_resolved_unet2d_arguments():
    net = DiffusersUNet(in_channels=3, mask_aware=True, cond_channels=2, **TINY)
    assert net.unet.config.in_channels == 3 * 2 + 2
    assert net.config["in_channels"] == 3 and net.config["out_channels"] is None
    assert net.config["act_fn"] == "silu"  # a UNet2DModel default, recorded
    assert net.config["block_out_channels"] == [8, 16]
    assert net.downsampling_factor == 2


def test_three_levels_pad_odd_sizes():
    net = DiffusersUNet(
        in_channels=1,
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        norm_num_groups=4,
        add_attention=False,
    )
    assert net.downsampling_factor == 4
    x = torch.randn(1, 1, 23, 37)
    with torch.no_grad():
        assert net(x, torch.tensor([10.0])).shape == x.shape


def test_unknown_argument_raises():
    with pytest.raises(ConfigError, match="block_channels"):
        DiffusersUNet(in_channels=1, block_channels=(8, 16))


def test_rejected_configuration_raises():
    with pytest.raises(ConfigError, match="UNet2DModel"):
        DiffusersUNet(in_channels=1, **{**TINY, "up_block_types": ("UpBlock2D",)})
