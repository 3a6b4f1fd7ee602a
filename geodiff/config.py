"""Configurable objects: the keyword arguments of ``__init__`` are the configuration.

A class that inherits :class:`Configurable` records the arguments it was built with in ``self.config``
(a JSON-serialisable dict). ``save_pretrained`` writes ``config.json`` and, for torch modules, the weights
as ``model.safetensors``; ``from_pretrained`` builds the object again from them. Nothing is pickled.

Example
-------
>>> import tempfile, torch
>>> from geodiff.config import Configurable
>>> class Scale(Configurable, torch.nn.Module):
...     def __init__(self, channels: int = 2):
...         super().__init__()
...         self.weight = torch.nn.Parameter(torch.ones(channels))
>>> model = Scale(channels=3)
>>> model.config
{'channels': 3}
>>> folder = tempfile.mkdtemp()
>>> model.save_pretrained(folder)
>>> Scale.from_pretrained(folder).weight.shape
torch.Size([3])
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any, TypeVar

from geodiff.errors import CheckpointError, ConfigError

__all__ = ["Configurable", "CONFIG_NAME", "WEIGHTS_NAME", "check_json"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T", bound="Configurable")


def check_json(value: Any, where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` if ``value`` is not plain JSON (dict/list/str/number/bool/None)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} must be plain JSON (numbers, strings, lists, dicts): {err}") from err


class Configurable:
    """Mixin that records ``__init__`` keyword arguments as ``self.config`` and saves/loads them."""

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__dict__["__init__"]
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            if "config" not in self.__dict__:  # the most-derived class records its own arguments
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop("self")
                for name, parameter in signature.parameters.items():
                    if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(name, {}))
                    elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and arguments.pop(name, ()):
                        raise ConfigError(f"{cls.__name__} takes its configuration as keyword arguments only")
                object.__setattr__(self, "config", arguments)
            init(self, *args, **kw)

        cls.__init__ = recording_init  # type: ignore[misc]

    @classmethod
    def from_config(cls: type[T], config: dict[str, Any]) -> T:
        """Build the object from a configuration dict (as found in ``self.config``)."""
        try:
            return cls(**config)
        except TypeError as err:
            raise ConfigError(f"configuration does not fit {cls.__name__}: {err}") from err

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` (and ``model.safetensors`` for torch modules) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        check_json(self.config, f"configuration of {type(self).__name__}")
        (folder / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True))
        state_dict = getattr(self, "state_dict", None)
        if callable(state_dict):
            from safetensors.torch import save_file

            tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict().items()}
            save_file(tensors, str(folder / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls: type[T], folder: str | Path, *, device: str = "cpu") -> T:
        """Build the object from ``folder`` written by :meth:`save_pretrained`; weights strictly checked."""
        folder = Path(folder)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{config_path} is missing")
        try:
            config = json.loads(config_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{config_path} is not valid JSON: {err}") from err
        obj = cls.from_config(config)
        if callable(getattr(obj, "load_state_dict", None)):
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            weights = folder / WEIGHTS_NAME
            if not weights.is_file():
                raise CheckpointError(f"{weights} is missing")
            try:
                tensors = load_file(str(weights), device=device)
            except (SafetensorError, OSError, ValueError) as err:
                raise CheckpointError(f"{weights} cannot be read as safetensors: {err}") from err
            try:
                obj.load_state_dict(tensors, strict=True)  # type: ignore[attr-defined]
            except RuntimeError as err:
                raise CheckpointError(f"{weights} does not fit {cls.__name__}{config}: {err}") from err
            obj.to(device)  # type: ignore[attr-defined]
        return obj
