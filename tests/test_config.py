"""Configurable: init kwargs are the config; save/from_pretrained round trip; clear errors."""

import json

import pytest
import torch

from geodiff.config import Configurable
from geodiff.errors import CheckpointError, ConfigError


class Affine(Configurable, torch.nn.Module):
    def __init__(self, channels: int = 2, *, bias: bool = True, **extra):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(channels))
        self.bias = torch.nn.Parameter(torch.randn(channels)) if bias else None


def test_config_records_defaults_and_extra_kwargs():
    assert Affine(3, tag="x").config == {"channels": 3, "bias": True, "tag": "x"}


def test_round_trip_restores_weights(tmp_path):
    model = Affine(4, bias=False)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == {"channels": 4, "bias": False}
    again = Affine.from_pretrained(tmp_path)
    assert torch.equal(again.weight, model.weight) and again.bias is None


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="does not fit Affine"):
        Affine.from_config({"channels": 2, "bias": True, "self": 1})
    model = Affine(2)
    model.config["channels"] = object()
    with pytest.raises(ConfigError, match="plain JSON"):
        model.save_pretrained(tmp_path / "a")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        Affine.from_pretrained(tmp_path / "nothing")
    Affine(2).save_pretrained(tmp_path / "b")
    Affine(3).save_pretrained(tmp_path / "c")
    (tmp_path / "b" / "config.json").write_text(json.dumps({"channels": 3, "bias": True}))
    with pytest.raises(CheckpointError, match="does not fit"):
        Affine.from_pretrained(tmp_path / "b")
