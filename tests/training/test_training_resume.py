"""Checkpoints and exact resume: N steps == k steps + save + load + (N - k) steps, bitwise, even after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import geodiff
from geodiff.diffusion.denoiser import Denoiser
from geodiff.errors import CheckpointError
from geodiff.training import latest_checkpoint, read_checkpoint

from tests.training.training_helpers import resume_case, tiny_denoiser

SCRIPT = Path(__file__).with_name("resume_script.py")


class FieldDataset(Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]


def assert_same_state(a: Path, b: Path):
    """Two checkpoint folders hold bitwise equal model, EMA and optimizer tensors and the same history."""
    tensors_a, meta_a = read_checkpoint(a)
    tensors_b, meta_b = read_checkpoint(b)
    assert meta_a["step"] == meta_b["step"]
    assert meta_a["losses"] == meta_b["losses"]
    assert meta_a["ema"] == meta_b["ema"] and meta_a["optimizer"] == meta_b["optimizer"]
    for group in ("model", "ema", "optimizer"):
        assert tensors_a[group].keys() == tensors_b[group].keys()
        for key, value in tensors_a[group].items():
            assert torch.equal(value, tensors_b[group][key]), (group, key)


def assert_same_result(a, b):
    assert a.step == b.step and a.losses == b.losses
    for module_a, module_b in ((a.denoiser, b.denoiser), (a.ema, b.ema)):
        for (name, p), q in zip(module_a.state_dict().items(), module_b.state_dict().values()):
            assert torch.equal(p, q), name


@pytest.mark.parametrize("case", ["fields", "crops"])
def test_resume_equals_uninterrupted_run_bitwise(case, tmp_path):
    denoiser, data, settings = resume_case(case)
    full = geodiff.train(denoiser, data, steps=9, checkpoint_dir=tmp_path / "full", checkpoint_every=3,
                         progress=False, **settings)
    assert full.checkpoint == tmp_path / "full" / "step-00000009"

    denoiser, data, settings = resume_case(case)
    first = geodiff.train(denoiser, data, steps=4, checkpoint_dir=tmp_path / "split", checkpoint_every=3,
                          progress=False, **settings)
    assert first.step == 4 and latest_checkpoint(tmp_path / "split").name == "step-00000004"
    # a differently initialised denoiser and a Dataset instead of the tensor: the checkpoint restores everything
    other, data, settings = resume_case(case)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    resumed = geodiff.train(other, FieldDataset(data), steps=9, checkpoint_dir=tmp_path / "split",
                            checkpoint_every=3, progress=False, **settings)
    assert_same_result(full, resumed)
    assert_same_state(full.checkpoint, resumed.checkpoint)
    # only the newest checkpoint is kept
    assert [p.name for p in (tmp_path / "split").iterdir()] == ["step-00000009"]


def test_checkpoint_folders_load_as_denoisers_and_bad_resumes_are_refused(tmp_path):
    denoiser, data, settings = resume_case("fields")
    result = geodiff.train(denoiser, data, steps=3, checkpoint_dir=tmp_path, checkpoint_every=2, progress=False,
                           **settings)
    ema = Denoiser.from_pretrained(result.checkpoint / "ema")
    for (name, p), q in zip(result.ema.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(p, q), name
    meta = json.loads((result.checkpoint / "trainer.json").read_text())
    assert meta["step"] == 3 and len(meta["losses"]) == 3 and meta["sampler"]["epoch"] == 1

    # finished: calling again returns the state without training
    again = geodiff.train(tiny_denoiser(seed=5), data, steps=3, checkpoint_dir=tmp_path, progress=False, **settings)
    assert_same_result(result, again)
    with pytest.raises(CheckpointError, match="beyond steps=2"):
        geodiff.train(tiny_denoiser(), data, steps=2, checkpoint_dir=tmp_path, progress=False, **settings)
    with pytest.raises(CheckpointError, match="lr"):
        geodiff.train(tiny_denoiser(), data, steps=5, checkpoint_dir=tmp_path, progress=False,
                      **{**settings, "lr": 1e-3})
    with pytest.raises(CheckpointError, match="data_shape"):
        geodiff.train(tiny_denoiser(), data[:8], steps=5, checkpoint_dir=tmp_path, progress=False, **settings)

    # left-overs of a writer killed mid-write are ignored, and removed by the next save
    (tmp_path / ".tmp-step-junk").mkdir()
    (tmp_path / ".tmp-step-junk" / "model").write_text("partial")
    (tmp_path / "step-00000099").mkdir()  # no manifest: incomplete, never picked
    more = geodiff.train(tiny_denoiser(), data, steps=4, checkpoint_dir=tmp_path, progress=False, **settings)
    assert more.step == 4 and more.losses[:3] == result.losses
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004"]

    # a modified file is detected
    weights = more.checkpoint / "ema" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="sha256"):
        geodiff.train(tiny_denoiser(), data, steps=5, checkpoint_dir=tmp_path, progress=False, **settings)
    # resume=False starts again and replaces the old checkpoints
    fresh = geodiff.train(tiny_denoiser(), data, steps=2, checkpoint_dir=tmp_path, checkpoint_every=2,
                          resume=False, progress=False, **settings)
    assert fresh.losses == result.losses[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002"]


@pytest.mark.parametrize("case", ["crops"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(case, tmp_path):
    steps, every, stall_at = 10, 3, 6
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), case, str(killed_dir), str(steps), str(every), str(stall_at)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while latest_checkpoint(killed_dir) is None or latest_checkpoint(killed_dir).name != f"step-{stall_at:08d}":
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the training subprocess did not reach its checkpoint"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert latest_checkpoint(killed_dir).name == f"step-{stall_at:08d}"

    denoiser, data, settings = resume_case(case)
    uninterrupted = geodiff.train(denoiser, data, steps=steps, checkpoint_dir=tmp_path / "whole",
                                  checkpoint_every=every, progress=False, **settings)
    denoiser, data, settings = resume_case(case)
    resumed = geodiff.train(denoiser, data, steps=steps, checkpoint_dir=killed_dir, checkpoint_every=every,
                            progress=False, **settings)
    assert_same_result(uninterrupted, resumed)
    assert_same_state(uninterrupted.checkpoint, resumed.checkpoint)


def test_resume_with_a_tuple_in_the_backbone_config(tmp_path):
    """A configuration holding tuples (stored as JSON lists in the checkpoint) resumes instead of 'settings differ'."""
    from geodiff.backbones import UNet
    from geodiff.diffusion.denoiser import Denoiser

    def fresh():
        torch.manual_seed(0)
        return Denoiser(UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                             attention_levels=(), mid_attention=False, norm_groups=4))

    data = torch.randn(8, 1, 8, 8)
    geodiff.train(fresh(), data, steps=2, batch_size=4, checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    resumed = geodiff.train(fresh(), data, steps=3, batch_size=4, checkpoint_dir=tmp_path, progress=False)
    straight = geodiff.train(fresh(), data, steps=3, batch_size=4, progress=False)
    assert resumed.step == 3 and resumed.losses == straight.losses
