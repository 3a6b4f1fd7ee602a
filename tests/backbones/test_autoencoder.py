"""Latent autoencoder: shapes, periodicity, save/load round trip, training lowers the reconstruction error."""

import pytest
import torch

from geodiff.backbones.autoencoder import Autoencoder
from geodiff.training.autoencoder import train_autoencoder
from geodiff.errors import CheckpointError, GridError


def test_save_and_load_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    ae = Autoencoder(3, 4, base_channels=8, channel_mults=(1, 2), periodic_lat=True, periodic_lon=True)
    x = torch.randn(2, 3, 16, 16)
    ae.save_pretrained(tmp_path / "ae")
    loaded = Autoencoder.from_pretrained(tmp_path / "ae")
    assert loaded.config == ae.config and loaded.config["channel_mults"] == [1, 2]
    for (name, a), (_, b) in zip(ae.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), ae.eval().encode(x))
        assert torch.equal(loaded(x), ae(x))
    (tmp_path / "ae" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Autoencoder.from_pretrained(tmp_path / "ae")


def test_doubly_periodic_autoencoder_commutes_with_even_rolls():
    torch.manual_seed(1)
    ae = Autoencoder(2, 3, base_channels=8, channel_mults=(1, 2), periodic_lat=True, periodic_lon=True).eval()
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        rolled = ae(torch.roll(x, (4, -6), dims=(-2, -1)))
        torch.testing.assert_close(rolled, torch.roll(ae(x), (4, -6), dims=(-2, -1)), rtol=1e-5, atol=1e-5)
        assert ae.encode(x).shape == (1, 3, 8, 8)


def test_training_reduces_the_error_and_checks_inputs():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(64, 1, 1, 1, generator=g)
    grid = torch.linspace(0, 6.283, 16)
    data = torch.cat([base * torch.sin(grid)[None, None, :, None] * torch.cos(grid)[None, None, None, :]] * 2, 1)
    ae = Autoencoder(2, 2, base_channels=8, channel_mults=(1, 2))
    result = train_autoencoder(ae, data, steps=60, batch_size=16, lr=3e-3, progress=False)
    assert sum(result.losses[-10:]) < 0.5 * sum(result.losses[:10])
    with pytest.raises(GridError, match=r"data must be \[N, 2, H, W\]"):
        train_autoencoder(ae, torch.zeros(4, 3, 16, 16), steps=1, progress=False)
    with pytest.raises(GridError, match="divisible"):
        ae.encode(torch.zeros(1, 2, 15, 16))
