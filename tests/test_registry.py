"""Plugin registry: built-ins by name, run-time registration, entry points, clear errors."""

from importlib.metadata import EntryPoint

import pytest

from geodiff import registry
from geodiff.errors import PluginError


@pytest.mark.parametrize("kind", registry.KINDS)
def test_every_builtin_imports_and_round_trips_its_name(kind):
    for name in registry.available(kind):
        plugin = registry.get(kind, name)
        assert registry.name_of(kind, plugin) == name


def test_unknown_name_lists_what_is_available():
    with pytest.raises(PluginError, match=r"no sampler plugin named 'nope'; available: .*heun"):
        registry.get("sampler", "nope")
    with pytest.raises(PluginError, match="unknown plugin kind 'widget'"):
        registry.available("widget")


def test_class_or_instance_passes_through():
    cls = registry.get("sampler", "euler")
    assert registry.get("sampler", cls) is cls
    instance = cls()
    assert registry.get("sampler", instance) is instance
    assert registry.name_of("sampler", instance) == "euler"


def test_runtime_registration_and_collisions():
    class Mine:
        pass

    registry.register("reward", "test_mine", Mine, overwrite=True)
    assert registry.get("reward", "test_mine") is Mine
    assert "test_mine" in registry.available("reward")
    with pytest.raises(PluginError, match="already registered"):
        registry.register("sampler", "heun", Mine)
    with pytest.raises(PluginError, match="not a registered"):
        registry.name_of("sampler", Mine)


def test_entry_points_are_found_and_failures_named(monkeypatch):
    good = EntryPoint("third_party_euler", "geodiff.diffusion.samplers:EulerSampler", "geodiff.sampler")
    bad = EntryPoint("broken", "no_such_module_xyz:Thing", "geodiff.sampler")
    registry._entry_points.cache_clear()
    monkeypatch.setattr(registry, "entry_points", lambda group: [good, bad] if group == "geodiff.sampler" else [])
    try:
        assert "third_party_euler" in registry.available("sampler")
        assert registry.get("sampler", "third_party_euler").__name__ == "EulerSampler"
        with pytest.raises(PluginError, match="'broken'.*failed to load"):
            registry.get("sampler", "broken")
    finally:
        registry._entry_points.cache_clear()
