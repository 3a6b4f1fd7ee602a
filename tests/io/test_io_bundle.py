"""Model bundle: exact save/load round trip; truncated, altered, unknown, pickled or mismatched files rejected."""

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
import xarray as xr
from tests.io.io_datasets import make_ocean
from torch import nn

import geodiff
from geodiff import registry
from geodiff.config import Configurable
from geodiff.diffusion.denoiser import Denoiser
from geodiff.errors import CheckpointError, ConfigError, GridError
from geodiff.io.bundle import BUNDLE_FILES, ModelBundle, load
from geodiff.io.codec import Codec
from geodiff.io.normalize import Normalizer

torch.set_num_threads(1)


@registry.register("backbone", "io_test_tiny_net", overwrite=True)
class TinyNet(Configurable, nn.Module):
    """A two-layer convolutional backbone that uses its noise label (enough to tell weights apart)."""

    def __init__(self, channels: int = 9, hidden: int = 4):
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, channels, 3, padding=1)
        self.register_buffer("scale", torch.tensor(1.5))

    def forward(self, x, noise_label, *, mask=None, cond=None):
        label = noise_label.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return self.out(torch.tanh(self.inp(torch.cat([x, label], 1)))) * self.scale


def make_bundle(**metadata) -> ModelBundle:
    ds = make_ocean()
    codec = Codec.from_dataset(ds)
    denoiser = Denoiser(TinyNet(channels=codec.shape[0]), sigma_data=0.7, mask=codec.mask)
    with torch.no_grad():
        for p in denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return ModelBundle(denoiser, codec, Normalizer.fit(ds), {"dataset": "tiny ocean", **metadata})


@pytest.fixture
def saved(tmp_path):
    bundle = make_bundle()
    folder = tmp_path / "model"
    bundle.save(folder)
    return bundle, folder


def rewrite_manifest(folder):
    """Recompute the manifest after tampering, as someone hiding the change would (the hash check is bypassed)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in BUNDLE_FILES:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_save_load_round_trip_gives_identical_outputs(saved):
    bundle, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == sorted([*BUNDLE_FILES, "manifest.json"])
    loaded = geodiff.load(folder, device="cpu")
    assert isinstance(loaded, ModelBundle) and not loaded.denoiser.training
    x = torch.randn(2, *bundle.codec.shape)
    sigma = torch.tensor([0.3, 4.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoiser(x, sigma), bundle.denoiser(x, sigma), rtol=0, atol=0)
    assert torch.equal(loaded.denoiser.mask, bundle.codec.mask)
    assert loaded.denoiser.config == bundle.denoiser.config
    assert loaded.codec.to_dict() == bundle.codec.to_dict() and torch.equal(loaded.codec.mask, bundle.codec.mask)
    xr.testing.assert_identical(loaded.normalizer.stats, bundle.normalizer.stats)
    assert loaded.metadata == {"dataset": "tiny ocean"}
    manifest_sha = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert loaded.sha256 == bundle.sha256 == manifest_sha
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1 and config["denoiser"]["backbone"]["name"] == "io_test_tiny_net"


def test_encode_decode_through_the_bundle(saved):
    _, folder = saved
    bundle = load(folder)
    ds = make_ocean()
    x, mask = bundle.encode(ds)
    assert abs(float(x[:, mask].mean())) < 0.5  # normalised
    xr.testing.assert_allclose(bundle.decode(x, time=ds.time), ds, rtol=1e-5)
    ensemble = bundle.decode(torch.stack([x, x]), member=True, time=ds.time)
    assert ensemble.sizes["member"] == 2 and ensemble.thetao.attrs["units"] == "degC"


def test_save_is_deterministic_and_refuses_foreign_folders(saved, tmp_path):
    bundle, folder = saved
    again = tmp_path / "again"
    bundle.save(again)
    for name in [*BUNDLE_FILES, "manifest.json"]:
        assert (again / name).read_bytes() == (folder / name).read_bytes()
    with pytest.raises(CheckpointError, match="is not empty"):
        bundle.save(folder)
    bundle.save(folder, overwrite=True)
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        bundle.save(folder, overwrite=True)


@pytest.mark.parametrize("name", [*BUNDLE_FILES, "manifest.json"])
def test_flipped_byte_is_rejected(saved, name):
    _, folder = saved
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=name.replace(".", "\\.")):
        load(folder)


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_truncated_file_is_rejected(saved, name):
    _, folder = saved
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) - 7])
    with pytest.raises(CheckpointError, match=f"{name}.*truncated"):
        load(folder)


def test_size_is_compared_before_the_weights_are_read(saved, monkeypatch):
    import os
    from pathlib import Path

    _, folder = saved
    os.truncate(folder / "model.safetensors", 4 * 2**30)  # 4 GiB, sparse: nothing written, and nothing may be read
    read_bytes = Path.read_bytes

    def guarded(path):
        assert path.name != "model.safetensors", "the weights were read before their size was checked"
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    with pytest.raises(CheckpointError, match="model.safetensors has 4294967296 bytes; the manifest says"):
        load(folder)


def test_disk_full_while_saving_is_a_store_error_and_the_partial_bundle_never_loads(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from geodiff.errors import StoreError

    write_bytes = Path.write_bytes

    def full(path, data):
        if path.name == "normalizer.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StoreError, match="no space left on the device while writing a model bundle"):
        make_bundle().save(tmp_path / "model")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="is missing"):
        load(tmp_path / "model")


def test_an_oversized_manifest_is_refused_unread(saved):
    _, folder = saved
    (folder / "manifest.json").write_bytes(b" " * (1 << 20))
    with pytest.raises(CheckpointError, match="manifest.json has 1048576 bytes"):
        load(folder)


@pytest.mark.parametrize("name", [*BUNDLE_FILES, "manifest.json"])
def test_missing_file_is_rejected(saved, name):
    _, folder = saved
    (folder / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name} is missing"):
        load(folder)


@pytest.mark.parametrize("extra", ["weights.pt", "optimizer.pkl", "pytorch_model.bin", "README.txt"])
def test_unknown_or_pickle_file_is_rejected(saved, extra):
    _, folder = saved
    (folder / extra).write_bytes(pickle.dumps({"a": 1}))
    message = "looks like a pickle" if not extra.endswith(".txt") else "not part of a model bundle"
    with pytest.raises(CheckpointError, match=f"{extra}.*{message}"):
        load(folder)


def test_pickle_bytes_inside_a_bundle_file_are_rejected(saved):
    _, folder = saved
    (folder / "normalizer.json").write_bytes(pickle.dumps({"format": "geodiff.normalizer"}))
    rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match="normalizer.json is a pickle"):
        load(folder)


def test_torch_save_in_place_of_safetensors_is_rejected(saved):
    bundle, folder = saved
    torch.save(bundle.denoiser.state_dict(), folder / "model.safetensors")  # a zip of pickles
    rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match="model.safetensors is a zip archive"):
        load(folder)


def test_config_that_does_not_fit_the_weights_is_rejected(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["denoiser"]["backbone"]["config"]["hidden"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match="model.safetensors does not fit the denoiser described in .*config.json"):
        load(folder)


def test_unknown_backbone_or_newer_format_is_rejected(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match="config.json has format_version 99"):
        load(folder)
    config["denoiser"]["backbone"]["name"] = "no_such_backbone"
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match="config.json does not describe a denoiser.*no_such_backbone"):
        load(folder)


def test_codec_that_does_not_fit_the_mask_is_rejected(saved):
    _, folder = saved
    spec = json.loads((folder / "codec.json").read_text())
    spec["variables"] = spec["variables"][:1]
    (folder / "codec.json").write_text(json.dumps(spec))
    rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match="codec.json does not describe a valid codec"):
        load(folder)


def test_bundle_parts_must_fit_together():
    bundle = make_bundle()
    with pytest.raises(GridError, match="'so' has no normalisation statistics"):
        ModelBundle(bundle.denoiser, bundle.codec, Normalizer.affine({"thetao": (0, 1), "zos": (0, 1)}))
    with pytest.raises(ConfigError, match="metadata must be plain JSON"):
        ModelBundle(bundle.denoiser, bundle.codec, bundle.normalizer, {"seed": np.int64(3)})
    bundle.denoiser.set_mask(~bundle.codec.mask)
    with pytest.raises(GridError, match="mask"):
        ModelBundle(bundle.denoiser, bundle.codec, bundle.normalizer)


def test_bundle_with_the_library_unet(tmp_path):
    from geodiff.backbones import unet

    ds = make_ocean()
    codec = Codec.from_dataset(ds)
    net = unet.UNet(in_channels=9, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(),
                    mid_attention=False, norm_groups=4)
    bundle = ModelBundle(Denoiser(net, mask=codec.mask), codec, Normalizer.fit(ds), {})
    bundle.save(tmp_path / "unet")
    loaded = load(tmp_path / "unet")
    x = torch.randn(1, *codec.shape)
    bundle.denoiser.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.denoiser(x, 1.0), bundle.denoiser(x, 1.0), rtol=0, atol=0)
