"""A checkpoint folder is read only as its manifest describes it: names inside the folder, every file listed,
sizes compared before anything is read; a full disk while writing one is a named error that keeps the last one."""

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from geodiff.errors import CheckpointError, StoreError
from geodiff.training.checkpoint import MANIFEST_NAME, latest_checkpoint, read_checkpoint, write_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "run", 3, tensors={"ema": {"w": torch.arange(4.0)}}, meta={"step": 3},
                            configs={"ema": {"kind": "test"}})


def _edit_manifest(path, edit):
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    edit(manifest["files"])
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_manifest_records_sha256_and_size_of_every_file(checkpoint):
    files = json.loads((checkpoint / MANIFEST_NAME).read_text())["files"]
    assert sorted(files) == ["ema/config.json", "ema/model.safetensors", "trainer.json"]
    assert files["trainer.json"]["size"] == (checkpoint / "trainer.json").stat().st_size
    tensors, meta = read_checkpoint(checkpoint)
    assert meta == {"step": 3} and tensors["ema"]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("name", ["../outside.json", "/etc/hostname", "ema/../../outside.json", "."])
def test_a_manifest_naming_a_file_outside_its_folder_is_refused(checkpoint, name):
    (checkpoint.parent / "outside.json").write_text("{}")
    _edit_manifest(checkpoint, lambda files: files.update({name: {"sha256": "0" * 64, "size": 2}}))
    with pytest.raises(CheckpointError, match="which is not a file inside"):
        read_checkpoint(checkpoint)


def test_a_link_leading_out_of_the_folder_is_refused(checkpoint):
    (checkpoint.parent / "elsewhere.safetensors").write_bytes((checkpoint / "ema" / "model.safetensors").read_bytes())
    (checkpoint / "ema" / "model.safetensors").unlink()
    os.symlink(checkpoint.parent / "elsewhere.safetensors", checkpoint / "ema" / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a file inside|is a link"):
        read_checkpoint(checkpoint)


def test_a_file_left_out_of_the_manifest_is_refused_not_trusted(checkpoint):
    _edit_manifest(checkpoint, lambda files: files.pop("ema/model.safetensors"))
    with pytest.raises(CheckpointError, match="does not list: ema/model.safetensors"):
        read_checkpoint(checkpoint)


def test_an_extra_file_in_the_folder_is_refused(checkpoint):
    (checkpoint / "optimizer.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(CheckpointError, match="does not list: optimizer.safetensors"):
        read_checkpoint(checkpoint)


def test_a_manifest_without_trainer_json_is_refused(checkpoint):
    (checkpoint / "trainer.json").unlink()
    _edit_manifest(checkpoint, lambda files: files.pop("trainer.json"))
    with pytest.raises(CheckpointError, match="does not list trainer.json"):
        read_checkpoint(checkpoint)


def test_size_is_compared_before_any_file_is_read(checkpoint, monkeypatch):
    weights = checkpoint / "ema" / "model.safetensors"
    os.truncate(weights, 4 * 2**30)  # 4 GiB, sparse: nothing is written, and nothing may be read
    import geodiff.training.checkpoint as module

    monkeypatch.setattr(module, "_sha256", lambda path: pytest.fail(f"{path} was read before its size check"))
    with pytest.raises(CheckpointError, match="has 4294967296 bytes; manifest.json says"):
        read_checkpoint(checkpoint)


def test_checkpoints_written_before_sizes_were_recorded_still_read(checkpoint):
    _edit_manifest(checkpoint, lambda files: files.update({k: v["sha256"] for k, v in files.items()}))
    _, meta = read_checkpoint(checkpoint)
    assert meta == {"step": 3}


def test_disk_full_while_writing_a_checkpoint_is_a_store_error_and_keeps_the_last_one(checkpoint, monkeypatch):
    write_bytes = Path.write_bytes

    def full(path, data):
        if path.name == "model.safetensors":
            write_bytes(path, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StoreError, match="no space left on the device while writing the checkpoint of step 4"):
        write_checkpoint(checkpoint.parent, 4, tensors={"ema": {"w": torch.zeros(4)}}, meta={"step": 4})
    assert latest_checkpoint(checkpoint.parent) == checkpoint
    assert [p.name for p in checkpoint.parent.iterdir()] == [checkpoint.name]
    assert read_checkpoint(checkpoint)[1] == {"step": 3}
