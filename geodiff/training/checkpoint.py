"""Training checkpoints: safetensors + JSON only, written atomically.

A checkpoint of step ``s`` is the folder ``<checkpoint_dir>/step-<s:08d>``::

    model/config.json, model/model.safetensors   the trained denoiser (loadable with ``Denoiser.from_pretrained``)
    ema/config.json,   ema/model.safetensors     its exponential moving average (idem; without EMA: absent)
    best/config.json,  best/model.safetensors    with validation: the weights of the best validation step
    objective.safetensors                        the objective's own state, if any (e.g. DPO's reference model)
    optimizer.safetensors                        optimizer state tensors, flattened as ``state.<param>.<key>``
    trainer.json                                 step, loss history, training settings, RNG/sampler state,
                                                 optimizer param groups and the index of optimizer.safetensors
    manifest.json                                sha256 and size of every other file (written last)

It is first written into a hidden temporary folder in ``checkpoint_dir`` and renamed into place, so a process
killed while writing leaves either the previous checkpoint or the new one, never a partial one (left-over
temporary folders are ignored and removed by the next save). Nothing is pickled and nothing is read with
``torch.load``. Reading checks the folder against its manifest first: every name must be a plain relative path
inside the folder (no ``..``, no absolute path, no link leading out), every file in the folder must be listed
(a file left out of the manifest is refused, not trusted), and each file's size is compared before it is read.

Example
-------
>>> import tempfile, torch
>>> from geodiff.training.checkpoint import latest_checkpoint, read_checkpoint, write_checkpoint
>>> folder = tempfile.mkdtemp()
>>> path = write_checkpoint(folder, 7, tensors={"ema": {"w": torch.ones(2)}}, meta={"step": 7})
>>> latest_checkpoint(folder) == path, path.name
(True, 'step-00000007')
>>> tensors, meta = read_checkpoint(path)
>>> meta["step"], tensors["ema"]["w"].tolist()
(7, [1.0, 1.0])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from torch import Tensor

from geodiff.errors import CheckpointError
from geodiff.io.encoding import disk_full

__all__ = [
    "write_checkpoint",
    "read_checkpoint",
    "latest_checkpoint",
    "checkpoint_step",
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "META_NAME",
    "MANIFEST_NAME",
]

META_NAME = "trainer.json"
MANIFEST_NAME = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_TMP_PREFIX = ".tmp-step-"
_MAX_MANIFEST_BYTES = 1 << 20
# tensor groups and their files inside a checkpoint folder
_GROUP_FILES = {
    "model": "model/model.safetensors",
    "ema": "ema/model.safetensors",
    "optimizer": "optimizer.safetensors",
    "best": "best/model.safetensors",
    "objective": "objective.safetensors",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True, allow_nan=True))


def _write_files(tmp: Path, tensors: Mapping[str, Mapping[str, Tensor]],
                 configs: Mapping[str, dict[str, Any]] | None, meta: dict[str, Any]) -> list[Path]:
    """Write the tensor groups, configurations and ``trainer.json`` into ``tmp``; returns the files written."""
    from safetensors.torch import save

    files = []
    for group, named in tensors.items():
        if group not in _GROUP_FILES:
            raise CheckpointError(f"unknown checkpoint tensor group {group!r}; expected one of {list(_GROUP_FILES)}")
        target = tmp / _GROUP_FILES[group]
        target.parent.mkdir(parents=True, exist_ok=True)
        # serialised in memory, written by Python: a full disk raises OSError(ENOSPC) like every other write
        target.write_bytes(save({k: v.detach().contiguous().cpu() for k, v in named.items()}))
        files.append(target)
    for group, config in (configs or {}).items():
        target = tmp / group / "config.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_json(target, config)
        files.append(target)
    _write_json(tmp / META_NAME, meta)
    files.append(tmp / META_NAME)
    return files


def write_checkpoint(
    checkpoint_dir: str | Path,
    step: int,
    *,
    tensors: Mapping[str, Mapping[str, Tensor]],
    meta: dict[str, Any],
    configs: Mapping[str, dict[str, Any]] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` atomically and remove every other one; returns its folder.

    ``tensors``: group (``model``, ``ema``, ``optimizer``, ``best``, ``objective``) -> name -> tensor; ``meta``:
    JSON for ``trainer.json``;
    ``configs``: group -> JSON written as ``<group>/config.json`` (so the folder loads with ``from_pretrained``).
    A full disk is a :class:`~geodiff.errors.StoreError`; the previous checkpoint is kept.
    """
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{int(step):08d}"
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        with disk_full(root, f"the checkpoint of step {int(step)}"):
            files = _write_files(tmp, tensors, configs, meta)
            manifest = {f.relative_to(tmp).as_posix(): {"sha256": _sha256(f), "size": f.stat().st_size}
                        for f in files}
            _write_json(tmp / MANIFEST_NAME, {"files": manifest, "step": int(step)})
            for f in [*files, tmp / MANIFEST_NAME]:
                _fsync(f)
        if final.exists():  # the same step written again: move the old one aside first
            stale = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
            os.replace(final, stale / final.name)
        os.replace(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for entry in root.iterdir():  # other checkpoints (older, or of a run restarted with resume=False) and
        # temporary folders of killed writers: the folder holds the state of this run only
        if entry.is_dir() and entry != final and (entry.name.startswith(_TMP_PREFIX) or _STEP_DIR.match(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
    return final


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint folder with the highest step in ``checkpoint_dir`` (None if there is none)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and (entry / MANIFEST_NAME).is_file():
            found.append((int(match.group(1)), entry))
    return max(found)[1] if found else None


def checkpoint_step(checkpoint_dir: str | Path) -> int:
    """The highest step of a complete checkpoint in ``checkpoint_dir`` (0 if there is none)."""
    latest = latest_checkpoint(checkpoint_dir)
    return 0 if latest is None else int(_STEP_DIR.match(latest.name).group(1))  # type: ignore[union-attr]


def read_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Read and verify (sha256) a checkpoint folder: ``(tensors by group, trainer.json contents)``.

    Raises :class:`~geodiff.errors.CheckpointError` for a missing, truncated or modified file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = _checked_manifest(path)
    for name, (_, size) in manifest.items():  # every size before any file is read
        found = (path / name).stat().st_size
        if size is not None and found != size:
            raise CheckpointError(f"checkpoint file {path / name} has {found} bytes; {MANIFEST_NAME} says {size} "
                                  "(truncated or altered)")
    for name, (digest, _) in manifest.items():
        file = path / name
        if _sha256(file) != digest:
            raise CheckpointError(f"checkpoint file {file} does not match its sha256 in {MANIFEST_NAME}")
    try:
        meta = json.loads((path / META_NAME).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path / META_NAME} is missing or not JSON: {err}") from err
    tensors: dict[str, dict[str, Tensor]] = {}
    for group, name in _GROUP_FILES.items():
        if name in manifest:
            try:
                tensors[group] = load_file(str(path / name))
            except (SafetensorError, OSError, ValueError) as err:
                raise CheckpointError(f"{path / name} cannot be read as safetensors: {err}") from err
    return tensors, meta


def _checked_manifest(path: Path) -> dict[str, tuple[str, int | None]]:
    """``{relative name: (sha256, size or None)}`` of a checkpoint's manifest, after checking that every name is a
    file inside ``path``, that every file in ``path`` is listed, and that ``trainer.json`` is."""
    manifest_file = path / MANIFEST_NAME
    try:
        if manifest_file.stat().st_size > _MAX_MANIFEST_BYTES:
            raise CheckpointError(f"{manifest_file} has more than {_MAX_MANIFEST_BYTES} bytes; not a manifest")
        listed = json.loads(manifest_file.read_text())["files"]
    except (OSError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{manifest_file} is missing or unreadable: {err}") from err
    if not isinstance(listed, dict):
        raise CheckpointError(f"{manifest_file}: 'files' must map file names to their sha256")
    root = path.resolve()
    manifest: dict[str, tuple[str, int | None]] = {}
    for name, entry in listed.items():
        relative = PurePosixPath(name)
        inside = (path / name).resolve()
        if (relative.is_absolute() or ".." in relative.parts or "\\" in name or not relative.parts
                or not inside.is_relative_to(root) or inside == root):
            raise CheckpointError(f"{manifest_file} names {name!r}, which is not a file inside {path}")
        if (path / name).is_symlink():
            raise CheckpointError(f"checkpoint file {path / name} is a link; checkpoints hold plain files only")
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint file {path / name} is missing")
        if isinstance(entry, str):  # checkpoints written before sizes were recorded
            manifest[relative.as_posix()] = (entry, None)
        elif isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("size"), int):
            manifest[relative.as_posix()] = (entry["sha256"], entry["size"])
        else:
            raise CheckpointError(f"{manifest_file} entry for {name!r} needs 'sha256' and 'size'")
    present = {file.relative_to(path).as_posix() for file in path.rglob("*") if file.is_symlink() or not file.is_dir()}
    unlisted = sorted(present - set(manifest) - {MANIFEST_NAME})
    if unlisted:
        raise CheckpointError(f"{path} holds files that {MANIFEST_NAME} does not list: {', '.join(unlisted)}; "
                              "a checkpoint is read only when every file is listed")
    if META_NAME not in manifest:
        raise CheckpointError(f"{manifest_file} does not list {META_NAME}")
    return manifest


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors ``{"state.<param>.<key>": tensor}`` and a JSON index.

    The index holds ``param_groups`` and, per parameter, the non-tensor values and the names of tensor values.

    >>> import torch
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.AdamW([p])
    >>> p.grad = torch.ones(2); opt.step()
    >>> tensors, index = flatten_optimizer_state(opt.state_dict())
    >>> sorted(tensors)
    ['state.0.exp_avg', 'state.0.exp_avg_sq', 'state.0.step']
    """
    tensors: dict[str, Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        entry: dict[str, Any] = {"tensors": [], "values": {}}
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"state.{param_id}.{key}"] = value
                entry["tensors"].append(key)
            else:
                entry["values"][key] = value
        entries[str(param_id)] = entry
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    index = {"state": entries, "param_groups": groups, "tuples": sorted(
        {k for g in state["param_groups"] for k, v in g.items() if isinstance(v, tuple)})}
    return tensors, index


def unflatten_optimizer_state(tensors: Mapping[str, Tensor], index: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`: an ``optimizer.load_state_dict`` argument."""
    try:
        state = {}
        for param_id, entry in index["state"].items():
            param_state: dict[str, Any] = dict(entry["values"])
            for key in entry["tensors"]:
                param_state[key] = tensors[f"state.{param_id}.{key}"]
            state[int(param_id)] = param_state
        tuples = set(index.get("tuples", []))
        groups = [{k: (tuple(v) if k in tuples else v) for k, v in g.items()} for g in index["param_groups"]]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"optimizer state does not match its index: missing {err}") from err
    return {"state": state, "param_groups": groups}

