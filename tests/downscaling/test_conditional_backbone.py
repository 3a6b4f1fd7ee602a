"""ConditionalUNet: shapes with sources on their own grids, any subset of sources, dropout only in training,
classifier-free guidance, config/weights round trip."""

import itertools
import json

import pytest
import torch

from geodiff import registry
from geodiff.backbones.conditional import ClassifierFreeDenoiser, ConditionalUNet
from geodiff.errors import ConfigError, GridError

from .conftest import tiny_net

SOURCES = {"coarse": 1, "satellite": 2, "topography": 1}


def randomised(net: ConditionalUNet) -> ConditionalUNet:
    """Every weight random (the zero-initialised projections would hide the sources)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=g))
    return net.eval()


def sources(batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"coarse": torch.randn(batch, 1, height // 4, width // 4, generator=g),
            "satellite": torch.randn(batch, 2, height // 2, width // 2, generator=g),
            "topography": torch.randn(1, 1, 2 * height, 2 * width, generator=g)}  # shared by the batch


@pytest.mark.parametrize("hw", [(16, 16), (12, 20), (8, 28)])
def test_shapes_on_own_grids(hw):
    net = randomised(tiny_net(sources=SOURCES, channel_mults=(1, 2, 2)))
    x = torch.randn(2, 1, *hw)
    out = net(x, torch.tensor([0.1, -0.5]), cond=sources(2, *hw))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert registry.get("backbone", "conditional_unet") is ConditionalUNet


def test_any_subset_of_sources_at_inference():
    net = randomised(tiny_net(sources=SOURCES))
    x, label = torch.randn(2, 1, 16, 16), torch.zeros(2)
    full = sources(2, 16, 16)
    outputs = {}
    for k in range(len(SOURCES) + 1):
        for subset in itertools.combinations(sorted(SOURCES), k):
            out = net(x, label, cond={name: full[name] for name in subset})
            assert out.shape == x.shape and torch.isfinite(out).all()
            outputs[subset] = out
    assert len(outputs) == 8
    # every source changes the output when given, and the output does not depend on sources left out
    for name in SOURCES:
        others = tuple(sorted(set(SOURCES) - {name}))
        assert not torch.allclose(outputs[tuple(sorted(SOURCES))], outputs[others])
        changed = {**{k: full[k] for k in others}, name: full[name] + 1.0}
        assert not torch.allclose(net(x, label, cond=changed), outputs[tuple(sorted(SOURCES))])
    assert torch.equal(net(x, label, cond=None), outputs[()])


def test_source_dropout_only_in_training():
    net = randomised(tiny_net(sources=SOURCES, source_dropout=0.5))
    x, label, cond = torch.randn(64, 1, 8, 8), torch.zeros(64), sources(64, 8, 8)
    _, present = net._sources(cond, 64, x)
    assert bool(present.all())  # eval mode: nothing dropped
    net.train()
    torch.manual_seed(3)
    _, present = net._sources(cond, 64, x)
    assert 0.35 < float(present.float().mean()) < 0.65
    # a dropped source is exactly an absent one: reproduce the draw and compare with the source left out
    net.source_dropout = 0.5
    torch.manual_seed(4)
    dropped = net(x, label, cond=cond)
    torch.manual_seed(4)
    kept = torch.rand(64, 3) >= 0.5
    net.source_dropout = 0.0
    for b in (0, 1, 2, 3):
        subset = {name: cond[name][b if cond[name].shape[0] > 1 else 0][None]
                  for s, name in enumerate(sorted(SOURCES)) if kept[b, s]}
        single = net(x[b:b + 1], label[b:b + 1], cond=subset)
        assert torch.allclose(dropped[b:b + 1], single, atol=1e-5)


def test_bad_sources_raise():
    net = tiny_net(sources=SOURCES)
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ConfigError, match="unexpected cond keys"):
        net(x, 0.0, cond={"radar": torch.zeros(1, 1, 8, 8)})
    with pytest.raises(GridError, match="satellite"):
        net(x, 0.0, cond={"satellite": torch.zeros(1, 1, 4, 4)})  # 1 channel instead of 2
    with pytest.raises(ConfigError, match="at least one source"):
        ConditionalUNet(1, sources={}, base_channels=8)
    with pytest.raises(ConfigError, match="source_dropout"):
        ConditionalUNet(1, sources={"coarse": 1}, base_channels=8, source_dropout=1.0)


def test_config_and_weights_round_trip(tmp_path):
    net = randomised(tiny_net(sources=SOURCES))
    net.save_pretrained(tmp_path)
    again = ConditionalUNet.from_pretrained(tmp_path).eval()
    x, cond = torch.randn(2, 1, 16, 16), sources(2, 16, 16)
    assert again.config == json.loads(json.dumps(net.config))
    assert torch.equal(again(x, torch.zeros(2), cond=cond), net(x, torch.zeros(2), cond=cond))


def test_classifier_free_guidance():
    net = randomised(tiny_net(sources=SOURCES))
    denoiser = lambda x, sigma, cond=None: net(x, torch.zeros(x.shape[0]), cond=cond)
    x, cond = torch.randn(2, 1, 8, 8), sources(2, 8, 8)
    plain = denoiser(x, 0.0, cond)
    assert torch.equal(ClassifierFreeDenoiser(denoiser, 1.0)(x, 0.0, cond), plain)
    assert torch.allclose(ClassifierFreeDenoiser(denoiser, 0.0)(x, 0.0, cond), denoiser(x, 0.0, None))
    partial = ClassifierFreeDenoiser(denoiser, 3.0, drop=["topography"])(x, 0.0, cond)
    base = denoiser(x, 0.0, {k: v for k, v in cond.items() if k != "topography"})
    assert torch.allclose(partial, base + 3.0 * (plain - base), atol=1e-5)
