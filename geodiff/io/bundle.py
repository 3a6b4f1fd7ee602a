"""Model bundle: a trained denoiser with its codec and normalisation statistics, in one checked folder.

Files (nothing else may be in the folder)::

    config.json        {"format", "format_version", "geodiff_version", "denoiser": Denoiser.config,
                        "denoiser_mask": "codec" | null, "metadata": {...}}
    model.safetensors  the denoiser's weights ("denoiser.<name>") and the codec mask ("codec.mask", bool [C, H, W])
    normalizer.json    normalisation statistics (Normalizer.to_dict or AnomalyNormalizer.to_dict)
    codec.json         codec spec (Codec.to_dict)
    manifest.json      {"files": {name: {"sha256", "size"}}} for the four files above

``load`` checks the folder before anything is parsed: no missing or unknown file, each file's size and
sha256 as in the manifest, no pickle (by name or by magic bytes); then the weights must fit the denoiser
built from ``config.json`` exactly. Any failure raises :class:`~geodiff.errors.CheckpointError` naming the
file. Weights are read with safetensors only; nothing is ever unpickled. ``bundle.sha256`` (the sha256 of
``manifest.json``) identifies the model in provenance records.

Example
-------
>>> import tempfile, torch, numpy as np, xarray as xr
>>> from torch import nn
>>> import geodiff
>>> from geodiff import registry
>>> from geodiff.config import Configurable
>>> from geodiff.diffusion.denoiser import Denoiser
>>> from geodiff.io import Codec, ModelBundle, Normalizer
>>> @registry.register("backbone", "doc_bundle_net", overwrite=True)
... class DocNet(Configurable, nn.Module):
...     def __init__(self, channels: int = 1):
...         super().__init__()
...         self.conv = nn.Conv2d(channels, channels, 1)
...     def forward(self, x, noise_label, *, mask=None, cond=None):
...         return self.conv(x)
>>> ds = xr.Dataset({"tos": (("time", "lat", "lon"), np.ones((2, 3, 4), "float32"), {"units": "degC"})},
...                 coords={"time": [0, 1], "lat": [0.0, 1.0, 2.0], "lon": [0.0, 1.0, 2.0, 3.0]})
>>> bundle = ModelBundle(Denoiser(DocNet()), Codec.from_dataset(ds), Normalizer.affine({"tos": (15.0, 10.0)}),
...                      {"trained_on": "doc example"})
>>> folder = tempfile.mkdtemp() + "/bundle"
>>> bundle.save(folder)
>>> loaded = geodiff.load(folder)
>>> loaded.sha256 == bundle.sha256, loaded.metadata
(True, {'trained_on': 'doc example'})
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from geodiff.config import check_json
from geodiff.errors import CheckpointError, ConfigError, DataError, GeodiffError, GridError
from geodiff.io.codec import Codec
from geodiff.io.encoding import disk_full
from geodiff.io.anomaly import ANOMALY_FORMAT, AnomalyNormalizer
from geodiff.io.normalize import Normalizer

__all__ = ["ModelBundle", "load", "BUNDLE_FORMAT", "BUNDLE_VERSION", "BUNDLE_FILES", "MAX_NORMALIZED"]

BUNDLE_FORMAT = "geodiff.bundle"
MANIFEST_FORMAT = "geodiff.bundle.manifest"
BUNDLE_VERSION = 1
CONFIG, WEIGHTS, NORMALIZER, CODEC, MANIFEST = (
    "config.json",
    "model.safetensors",
    "normalizer.json",
    "codec.json",
    "manifest.json",
)
#: the files listed in the manifest
BUNDLE_FILES = (CONFIG, WEIGHTS, NORMALIZER, CODEC)
MASK_KEY = "codec.mask"
PREFIX = "denoiser."
#: largest magnitude of a normalised value accepted by ``encode`` and ``reconstruct`` (see ``ModelBundle.encode``)
MAX_NORMALIZED = 10.0
#: the largest manifest.json read (bytes): it lists four files
MAX_MANIFEST_BYTES = 64 * 1024
_OMITTED: Any = object()  # ``time`` not given to ``decode``: the codec's own time axis
# file names that usually hold pickles: reported as such
_PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib", ".npy", ".npz", ".dill"})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dumps(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _check_normalized_range(codec: Codec, x: torch.Tensor, mask: torch.Tensor, bound: float) -> None:
    """DataError naming the first (variable, level, cell) whose normalised value exceeds ``bound``."""
    far = (x.abs() > bound) & mask  # [T, C, H, W]
    if not bool(far.any()):
        return
    t, c, i, j = (int(k) for k in torch.nonzero(far)[0])
    variable, level = codec.channels[c]
    where = f"lat={codec.lat[i]:g}, lon={codec.lon[j]:g}" + ("" if level is None else f", level {level:g}")
    raise DataError(
        f"variable {variable!r} has {int(far.sum())} valid cells whose normalised value is beyond +-{bound:g} "
        f"(e.g. {float(x[t, c, i, j]):.4g} at time index {t}, {where}): far outside what the model was trained "
        "on; check the units and fill values, or pass max_normalized=None to encode it anyway"
    )


def _pickle_magic(data: bytes) -> str | None:
    """What kind of pickle container ``data`` starts with, if any."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return f"a pickle (protocol {data[1]})"
    if data[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save format, which holds pickles)"
    return None


class ModelBundle:
    """A denoiser with the codec and normaliser it was trained with, plus JSON ``metadata``.

    ``denoiser`` is a :class:`~geodiff.diffusion.denoiser.Denoiser` (or a deterministic
    :class:`~geodiff.diffusion.residual.RegressionModel`); its mask, when set, must equal ``codec.mask``. ``normalizer`` must have statistics for every codec channel.
    """

    def __init__(self, denoiser: Any, codec: Codec, normalizer: Normalizer | AnomalyNormalizer,
                 metadata: Mapping[str, Any] | None = None):
        from geodiff.diffusion.denoiser import Denoiser
        from geodiff.diffusion.residual import RegressionModel

        if not isinstance(denoiser, (Denoiser, RegressionModel)):
            raise ConfigError(f"denoiser must be a geodiff Denoiser or RegressionModel, got {type(denoiser).__name__}")
        if not isinstance(codec, Codec):
            raise ConfigError(f"codec must be a geodiff Codec, got {type(codec).__name__}")
        if not isinstance(normalizer, (Normalizer, AnomalyNormalizer)):
            raise ConfigError(f"normalizer must be a geodiff Normalizer or AnomalyNormalizer, got "
                              f"{type(normalizer).__name__}")
        metadata = dict(metadata or {})
        check_json(metadata, "bundle metadata")
        normalizer.check(codec)  # statistics for every channel (and cell), or GridError naming what is missing
        mask = getattr(denoiser, "mask", None)
        if mask is not None and (tuple(mask.shape) != codec.shape or not torch.equal(mask.cpu(), codec.mask)):
            raise GridError(f"the denoiser's mask {list(mask.shape)} differs from the codec's mask {list(codec.shape)}")
        self.denoiser = denoiser
        self.codec = codec
        self.normalizer = normalizer
        self.metadata = metadata
        self._sha256: str | None = None

    def __repr__(self) -> str:
        return f"ModelBundle({self.codec!r}, {self.normalizer!r}, metadata keys={sorted(self.metadata)})"

    # -------------------------------------------------------------------------------------------------------

    @property
    def sha256(self) -> str:
        """sha256 of ``manifest.json``: as written by the last :meth:`save` or read by :func:`load`.

        A bundle never saved gets it from its serialisation now (what ``save`` would write).
        """
        if self._sha256 is None:
            return _sha256(self._serialize()[MANIFEST])
        return self._sha256

    def to(self, device: str | torch.device) -> ModelBundle:
        """Move the denoiser to ``device`` (in place); returns the bundle."""
        self.denoiser.to(device)
        return self

    def encode(
        self, ds: xr.Dataset, *, max_normalized: float | None = MAX_NORMALIZED
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised tensors ``(x [T, C, H, W] float32, mask [C, H, W] bool)`` of ``ds`` (codec variables).

        A valid cell whose normalised value exceeds ``max_normalized`` in magnitude (default
        :data:`MAX_NORMALIZED` = 10: ten standard deviations of fitted statistics, five widths of an affine
        range) is far outside anything the model was trained on: :class:`~geodiff.errors.DataError` naming the
        variable, level and cell (wrong units, fill values, another variable). ``None`` switches the check off.
        """
        self.codec.check_grid(ds)  # the model grid first: a clearer error than missing statistics
        x, mask = self.codec.encode(self.normalizer.normalize(ds[self.codec.variables]))
        if max_normalized is not None:
            _check_normalized_range(self.codec, x, mask, float(max_normalized))
        return x, mask

    def statistics(self, time: Any = None, codec: Codec | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [C, H, W], std [C, H, W])`` float64 of the normaliser at ``time`` on ``codec``'s grid (default
        the bundle's; a model that samples any domain passes the codec of that domain). The last result is kept,
        so asking again for the same time and grid costs nothing."""
        codec = codec or self.codec
        key = (self.normalizer, codec, None if time is None else str(time))
        cached = getattr(self, "_statistics", None)
        if cached is None or cached[0][0] is not key[0] or cached[0][1] is not key[1] or cached[0][2] != key[2]:
            cached = self._statistics = (key, self.normalizer.cell_statistics(codec, time))
        return cached[1]

    def normalize_tensor(self, x: torch.Tensor, *, time: Any = None, codec: Codec | None = None) -> torch.Tensor:
        """Physical ``[..., C, H, W]`` -> normalised ``(x - mean) / std`` at ``time`` on ``codec``'s grid
        (:meth:`statistics`), computed in ``x``'s dtype."""
        mean, std = self._fields(x, time, codec)
        return (x - mean) / std

    def denormalize_tensor(self, x: torch.Tensor, *, time: Any = None, codec: Codec | None = None) -> torch.Tensor:
        """Normalised ``[..., C, H, W]`` -> physical ``x * std + mean`` at ``time`` on ``codec``'s grid, computed in
        ``x``'s dtype (pass float64 for the exactly rounded float32 result of float32 variables)."""
        mean, std = self._fields(x, time, codec)
        return x * std + mean

    def _fields(self, x: torch.Tensor, time: Any, codec: Codec | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The statistics as ``[C, H, W]`` tensors in ``x``'s dtype and device."""
        shape = (codec or self.codec).shape
        if x.ndim < 3 or tuple(x.shape[-3:]) != shape:
            raise GridError(f"x has shape {list(x.shape)}; expected [..., {', '.join(map(str, shape))}]")
        return tuple(torch.from_numpy(s).to(device=x.device, dtype=x.dtype) for s in self.statistics(time, codec))

    def decode(self, x: torch.Tensor, *, codec: Codec | None = None, member: bool = False,
               time: Any = _OMITTED) -> xr.Dataset:
        """Dataset in physical units from normalised tensors ``x`` (as :meth:`Codec.decode`: ``[B, C, H, W]`` along
        time, ``[M, B, C, H, W]`` with ``member=True``, or one field): un-normalised in float64 with the statistics
        of each field's time, then decoded by ``codec`` (default: the bundle's; a model that samples any domain
        passes the codec of that domain)."""
        values = torch.as_tensor(x).detach().cpu().to(torch.float64)
        axis = 1 if member else 0
        along_time = values.ndim == axis + 4
        times = None if time is _OMITTED or time is None else np.atleast_1d(np.asarray(time))
        if along_time and times is not None and times.size == values.shape[axis]:
            values = torch.stack([self.denormalize_tensor(values.select(axis, k), time=times[k], codec=codec)
                                  for k in range(times.size)], dim=axis)
        else:
            values = self.denormalize_tensor(values, time=None if times is None else times[0], codec=codec)
        kwargs = {} if time is _OMITTED else {"time": time}
        return (codec or self.codec).decode(values, member=member, **kwargs)

    # -------------------------------------------------------------------------------------------------------

    def _serialize(self) -> dict[str, bytes]:
        """The bytes of every bundle file, manifest included (deterministic)."""
        from safetensors.torch import save

        from geodiff import __version__

        mask = getattr(self.denoiser, "mask", None)
        config = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "geodiff_version": __version__,
            "denoiser": self.denoiser.config,
            "denoiser_mask": None if mask is None else "codec",
            "metadata": self.metadata,
        }
        check_json(config, "bundle configuration")
        tensors = {PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in self.denoiser.state_dict().items()}
        tensors[MASK_KEY] = self.codec.mask.contiguous()
        files = {
            CONFIG: _dumps(config),
            WEIGHTS: save(tensors, metadata={"format": "pt"}),
            NORMALIZER: _dumps(self.normalizer.to_dict()),
            CODEC: _dumps(self.codec.to_dict()),
        }
        manifest = {
            "format": MANIFEST_FORMAT,
            "format_version": BUNDLE_VERSION,
            "files": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in files.items()},
        }
        files[MANIFEST] = _dumps(manifest)
        return files

    def save(self, folder: str | Path, *, overwrite: bool = False) -> None:
        """Write the bundle into ``folder`` (created; it must be empty unless ``overwrite=True``).

        With ``overwrite=True`` an existing bundle's files are replaced; any other file there is an error.
        ``manifest.json`` is written last, so an interrupted save never loads.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise CheckpointError(f"{folder} exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        present = sorted(p.name for p in folder.iterdir())
        if present and not overwrite:
            raise CheckpointError(f"{folder} is not empty ({', '.join(present)}); pass overwrite=True")
        others = [name for name in present if name not in (*BUNDLE_FILES, MANIFEST)]
        if others:
            raise CheckpointError(f"{folder} holds files that are not part of a bundle: {', '.join(others)}")
        files = self._serialize()
        (folder / MANIFEST).unlink(missing_ok=True)
        with disk_full(folder, "a model bundle"):  # without its manifest, a partial bundle never loads
            for name in BUNDLE_FILES:
                (folder / name).write_bytes(files[name])
            (folder / MANIFEST).write_bytes(files[MANIFEST])
        self._sha256 = _sha256(files[MANIFEST])

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
        """Same as :func:`load`."""
        return load(folder, device=device)


# ---------------------------------------------------------------------------------------------------------------


def _read_checked(folder: Path) -> dict[str, bytes]:
    """Every bundle file's bytes after the folder, manifest, sizes, hashes and pickle checks.

    Sizes are compared with the manifest before a file is read, so a swapped or padded weights file is refused
    without reading it; only the manifest (at most :data:`MAX_MANIFEST_BYTES`) and each file's first bytes are
    read before that.
    """
    if not folder.is_dir():
        raise CheckpointError(f"model bundle folder {folder} does not exist")
    expected = (*BUNDLE_FILES, MANIFEST)
    for path in sorted(folder.iterdir()):
        if path.name in expected and path.is_file():
            continue
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise CheckpointError(f"{path} looks like a pickle file; bundles never hold pickles and none is loaded")
        raise CheckpointError(f"{path} is not part of a model bundle (expected only {', '.join(expected)})")
    for name in expected:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name} is missing")
    for name in expected:
        with open(folder / name, "rb") as handle:
            magic = _pickle_magic(handle.read(4))
        if magic is not None:
            raise CheckpointError(f"{folder / name} is {magic}; bundles never hold pickles and none is loaded")
    manifest_size = (folder / MANIFEST).stat().st_size
    if manifest_size > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{folder / MANIFEST} has {manifest_size} bytes; a bundle manifest has at most "
                              f"{MAX_MANIFEST_BYTES}")
    manifest = _parse_json(folder / MANIFEST, (folder / MANIFEST).read_bytes())
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{folder / MANIFEST} is not a geodiff bundle manifest")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or set(listed) != set(BUNDLE_FILES):
        found = sorted(listed) if isinstance(listed, dict) else listed
        raise CheckpointError(f"{folder / MANIFEST} must list exactly {', '.join(BUNDLE_FILES)}; it lists {found}")
    for name in BUNDLE_FILES:
        entry = listed[name]
        if not isinstance(entry, dict) or "size" not in entry or "sha256" not in entry:
            raise CheckpointError(f"{folder / MANIFEST} entry for {name} needs 'size' and 'sha256'")
        size = (folder / name).stat().st_size
        if size != entry["size"]:
            raise CheckpointError(
                f"{folder / name} has {size} bytes; the manifest says {entry['size']} (truncated or altered)"
            )
    files = {MANIFEST: (folder / MANIFEST).read_bytes()}
    for name in BUNDLE_FILES:
        data = (folder / name).read_bytes()
        if len(data) != listed[name]["size"] or _sha256(data) != listed[name]["sha256"]:
            raise CheckpointError(f"{folder / name} does not match its sha256 in the manifest (corrupted or altered)")
        files[name] = data
    return files


def _parse_json(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def load(folder: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Load and check a bundle written by :meth:`ModelBundle.save`; the denoiser is on ``device`` in eval mode.

    Raises :class:`~geodiff.errors.CheckpointError` naming the file for a missing, unknown, truncated,
    altered or pickle-carrying file, or weights that do not fit the configuration.

    Example
    -------
    >>> from geodiff.io.bundle import load
    >>> load("/no/such/bundle")
    Traceback (most recent call last):
    ...
    geodiff.errors.CheckpointError: model bundle folder /no/such/bundle does not exist
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.diffusion.gaussian_prior import GaussianResidualDenoiser
    from geodiff.diffusion.residual import RegressionModel, ResidualDenoiser

    folder = Path(folder)
    files = _read_checked(folder)
    config = _parse_json(folder / CONFIG, files[CONFIG])
    if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{folder / CONFIG} is not a geodiff bundle configuration")
    version = config.get("format_version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise CheckpointError(
            f"{folder / CONFIG} has format_version {version!r}; this geodiff reads up to {BUNDLE_VERSION}"
        )
    for key in ("denoiser", "metadata", "denoiser_mask"):
        if key not in config:
            raise CheckpointError(f"{folder / CONFIG} has no key {key!r}")
    codec_spec = _parse_json(folder / CODEC, files[CODEC])
    normalizer_spec = _parse_json(folder / NORMALIZER, files[NORMALIZER])
    try:
        tensors = load_tensors(files[WEIGHTS])
    except (SafetensorError, ValueError, OSError) as err:
        raise CheckpointError(f"{folder / WEIGHTS} cannot be read as safetensors: {err}") from err
    mask = tensors.pop(MASK_KEY, None)
    if mask is None:
        raise CheckpointError(f"{folder / WEIGHTS} has no tensor {MASK_KEY!r} (the codec mask)")
    unknown = sorted(k for k in tensors if not k.startswith(PREFIX))
    if unknown:
        raise CheckpointError(f"{folder / WEIGHTS} holds tensors that are not part of a bundle: {unknown}")
    try:
        codec = Codec.from_dict(codec_spec, mask)
    except GeodiffError as err:
        raise CheckpointError(
            f"{folder / CODEC} does not describe a valid codec (with the mask in {WEIGHTS}): {err}"
        ) from err
    try:
        anomaly = isinstance(normalizer_spec, dict) and normalizer_spec.get("format") == ANOMALY_FORMAT
        normalizer = (AnomalyNormalizer if anomaly else Normalizer).from_dict(normalizer_spec)
    except GeodiffError as err:
        raise CheckpointError(f"{folder / NORMALIZER} does not hold valid statistics: {err}") from err
    try:
        described = config["denoiser"]
        # the configuration names its class by its keys: a Gaussian prior, a regression mean, or neither; a
        # regression model has no noise preconditioning (no sigma_data)
        denoiser_class = (GaussianResidualDenoiser if "prior" in described else ResidualDenoiser
                          if "mean" in described else RegressionModel if "sigma_data" not in described
                          else Denoiser)
        denoiser = denoiser_class.from_config(config["denoiser"])
    except (GeodiffError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{folder / CONFIG} does not describe a denoiser that can be built: {err}") from err
    state = {k[len(PREFIX):]: v for k, v in tensors.items()}
    try:
        denoiser.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{folder / WEIGHTS} does not fit the denoiser described in {folder / CONFIG}: {err}"
        ) from err
    if config["denoiser_mask"] == "codec":
        denoiser.set_mask(codec.mask)
    elif config["denoiser_mask"] is not None:
        raise CheckpointError(f"{folder / CONFIG} key 'denoiser_mask' must be 'codec' or null")
    denoiser.to(device)
    denoiser.eval()
    try:
        bundle = ModelBundle(denoiser, codec, normalizer, config["metadata"])
    except GeodiffError as err:
        raise CheckpointError(f"{folder} holds parts that do not fit together: {err}") from err
    bundle._sha256 = _sha256(files[MANIFEST])
    return bundle
