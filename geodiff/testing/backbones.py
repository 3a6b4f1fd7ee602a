"""The backbone contract as a reusable test class (for pytest; any backbone plugin can reuse it).

A test module checks a backbone by subclassing :class:`BackboneContract` (class name starting with ``Test``)
and setting ``backbone_cls``, ``config`` (a tiny configuration without ``in_channels``, ``mask_aware``,
``cond_channels``, ``periodic_lon``, ``gradient_checkpointing``, which the checks set), ``registry_name``,
``parameter_range`` (for ``in_channels=3``) and ``roll_equivariant``.

Contract: ``backbone(x [B, Cin, H, W], noise_label [B], *, mask=None, cond=None) -> [B, Cout, H, W]`` for any
H, W; invalid (mask 0) inputs never influence the output of a ``mask_aware`` backbone; ``cond["concat"]``
is used when ``cond_channels > 0``; config is JSON and ``save_pretrained``/``from_pretrained`` reproduce the
outputs exactly; gradient checkpointing changes neither outputs nor gradients; bad input raises a
``GeodiffError`` subclass.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import torch

from geodiff import registry
from geodiff.errors import ConfigError, GridError


def fill_zero_parameters(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Give every all-zero parameter (zero-initialised output layers, biases) random values, in place.

    An untrained backbone outputs 0, which would make invariance checks pass trivially.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return module


class BackboneContract:
    backbone_cls: ClassVar[type]
    config: ClassVar[dict[str, Any]]
    registry_name: ClassVar[str]
    parameter_range: ClassVar[tuple[int, int]]
    roll_equivariant: ClassVar[bool] = False

    def make(self, seed: int = 0, **overrides: Any) -> torch.nn.Module:
        """A backbone of the tiny configuration with random (non-zero) weights, in eval mode."""
        torch.manual_seed(seed)
        net = self.backbone_cls(**{"in_channels": 3, **self.config, **overrides})
        return fill_zero_parameters(net, seed).eval()

    @staticmethod
    def inputs(batch: int = 2, channels: int = 3, height: int = 17, width: int = 33, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, channels, height, width, generator=generator)
        label = torch.rand(batch, generator=generator) * 2 - 1
        return x, label

    # -- shapes ----------------------------------------------------------------------------------------------

    @pytest.mark.parametrize("shape", [(1, 3, 45, 90), (2, 5, 17, 33), (1, 2, 1, 7)])
    def test_output_shape_equals_input_shape(self, shape):
        net = self.make(in_channels=shape[1])
        x, label = self.inputs(*shape)
        with torch.no_grad():
            out = net(x, label)
        assert out.shape == x.shape
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()

    def test_out_channels(self):
        net = self.make(in_channels=3, out_channels=2)
        x, label = self.inputs()
        with torch.no_grad():
            assert net(x, label).shape == (2, 2, 17, 33)

    def test_untrained_backbone_outputs_zero(self):
        net = self.backbone_cls(**{"in_channels": 3, **self.config})
        x, label = self.inputs()
        with torch.no_grad():
            assert torch.equal(net(x, label), torch.zeros_like(x))

    def test_parameter_count_is_reasonable(self):
        count = sum(p.numel() for p in self.make().parameters())
        low, high = self.parameter_range
        assert low <= count <= high, count

    # -- noise label and batch -----------------------------------------------------------------------------

    def test_noise_label_changes_output(self):
        net = self.make()
        x, _ = self.inputs(batch=1)
        with torch.no_grad():
            low, high = net(x, torch.tensor([0.1])), net(x, torch.tensor([2.0]))
        assert (low - high).abs().max() > 1e-4

    def test_scalar_noise_label_is_broadcast(self):
        net = self.make()
        x, _ = self.inputs()
        with torch.no_grad():
            torch.testing.assert_close(net(x, torch.tensor(0.7)), net(x, torch.full((2,), 0.7)), rtol=0, atol=0)

    def test_samples_are_independent(self):
        net = self.make()
        x, label = self.inputs(batch=3)
        with torch.no_grad():
            together = net(x, label)
            apart = torch.cat([net(x[i : i + 1], label[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-5)

    # -- mask ------------------------------------------------------------------------------------------------

    @staticmethod
    def land_mask(channels: int = 3, height: int = 17, width: int = 33, seed: int = 1) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(channels, height, width, generator=generator) > 0.3

    def test_land_input_values_do_not_change_output(self):
        net = self.make(mask_aware=True)
        x, label = self.inputs()
        mask = self.land_mask()
        noisy_land = x.clone()
        land = ~mask.expand_as(x)
        noisy_land[land] = 1e3 * torch.randn(int(land.sum()))
        nan_land = x.masked_fill(land, float("nan"))
        with torch.no_grad():
            reference = net(x, label, mask=mask)
            assert torch.equal(net(noisy_land, label, mask=mask), reference)
            assert torch.equal(net(nan_land, label, mask=mask), reference)

    def test_network_knows_where_land_is(self):
        net = self.make(mask_aware=True)
        x, label = self.inputs()
        mask = self.land_mask()
        x = x * mask  # land already 0: only the mask channels differ
        with torch.no_grad():
            assert (net(x, label, mask=mask) - net(x, label, mask=None)).abs().max() > 1e-4

    def test_mask_layouts_agree(self):
        net = self.make(mask_aware=True)
        x, label = self.inputs()
        mask = self.land_mask()
        with torch.no_grad():
            reference = net(x, label, mask=mask)
            assert torch.equal(net(x, label, mask=mask.float()), reference)
            assert torch.equal(net(x, label, mask=mask.expand(2, -1, -1, -1)), reference)
            single = self.land_mask(channels=1)
            assert torch.equal(net(x, label, mask=single), net(x, label, mask=single.expand(3, -1, -1)))

    def test_mask_is_ignored_without_mask_aware(self):
        net = self.make(mask_aware=False)
        x, label = self.inputs()
        with torch.no_grad():
            assert torch.equal(net(x, label, mask=self.land_mask()), net(x, label))

    # -- conditioning ----------------------------------------------------------------------------------------

    def test_concat_conditioning(self):
        net = self.make(cond_channels=2)
        x, label = self.inputs()
        cond_a, cond_b = torch.randn(2, 2, 2, 17, 33)
        with torch.no_grad():
            out_a = net(x, label, cond={"concat": cond_a})
            assert (out_a - net(x, label, cond={"concat": cond_b})).abs().max() > 1e-4
            one = cond_a[:1]
            expanded = one.expand(2, -1, -1, -1)
            assert torch.equal(net(x, label, cond={"concat": one}), net(x, label, cond={"concat": expanded}))
        with pytest.raises(ConfigError, match="concat"):
            net(x, label)
        with pytest.raises(ConfigError, match="other"):
            net(x, label, cond={"concat": cond_a, "other": cond_a})
        with pytest.raises(GridError, match="concat"):
            net(x, label, cond={"concat": cond_a[:, :1]})

    def test_unexpected_conditioning_raises(self):
        net = self.make()
        x, label = self.inputs()
        with pytest.raises(ConfigError, match="concat"):
            net(x, label, cond={"concat": torch.zeros(2, 1, 17, 33)})

    # -- bad input -------------------------------------------------------------------------------------------

    def test_bad_shapes_raise(self):
        net = self.make(mask_aware=True)
        x, label = self.inputs()
        with pytest.raises(GridError, match="x must have shape"):
            net(x[:, :2], label)
        with pytest.raises(GridError, match="x must have shape"):
            net(x[0], label)
        with pytest.raises(GridError, match="noise_label"):
            net(x, torch.zeros(3))
        with pytest.raises(GridError, match="mask"):
            net(x, label, mask=torch.ones(3, 16, 33, dtype=torch.bool))
        with pytest.raises(GridError, match="mask"):
            net(x, label, mask=torch.ones(2, 17, 33, dtype=torch.bool))

    # -- geometry --------------------------------------------------------------------------------------------

    def test_longitude_roll_equivariance(self):
        if not self.roll_equivariant:
            pytest.skip(f"{self.backbone_cls.__name__} is not roll-equivariant")
        net = self.make(periodic_lon=True, mask_aware=True)
        factor = net.downsampling_factor
        x, label = self.inputs(height=13, width=8 * factor)
        mask = self.land_mask(height=13, width=8 * factor)
        with torch.no_grad():
            out = net(x, label, mask=mask)
            for shift in (factor, 3 * factor, -factor):
                rolled = net(x.roll(shift, -1), label, mask=mask.roll(shift, -1))
                torch.testing.assert_close(rolled, out.roll(shift, -1), rtol=1e-4, atol=1e-5)

    # -- training and persistence ----------------------------------------------------------------------------

    def test_gradient_checkpointing_same_output_and_gradients(self):
        plain = self.make(mask_aware=True).train()
        checkpointed = self.make(mask_aware=True, gradient_checkpointing=True).train()
        checkpointed.load_state_dict(plain.state_dict())
        x, label = self.inputs()
        mask = self.land_mask()
        results = []
        for net in (plain, checkpointed):
            x_in = x.clone().requires_grad_(True)
            out = net(x_in, label, mask=mask)
            (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
            grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
            results.append((out.detach(), x_in.grad, grads))
        (out_a, gx_a, grads_a), (out_b, gx_b, grads_b) = results
        torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx_b, gx_a, rtol=1e-5, atol=1e-6)
        assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(plain.parameters()))
        for name in grads_a:
            torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)
        assert gx_a.abs().sum() > 0

    def test_config_is_json_and_registered(self):
        net = self.make(mask_aware=True, cond_channels=1)
        json.dumps(net.config, allow_nan=False)
        assert net.config["in_channels"] == 3 and net.config["mask_aware"] is True
        assert registry.get("backbone", self.registry_name) is self.backbone_cls
        assert registry.name_of("backbone", net) == self.registry_name

    def test_save_pretrained_round_trip(self, tmp_path):
        net = self.make(mask_aware=True, periodic_lon=True)
        net.save_pretrained(tmp_path)
        loaded = self.backbone_cls.from_pretrained(tmp_path).eval()
        assert json.loads(json.dumps(loaded.config)) == json.loads(json.dumps(net.config))
        x, label = self.inputs()
        mask = self.land_mask()
        with torch.no_grad():
            assert torch.equal(loaded(x, label, mask=mask), net(x, label, mask=mask))
