"""``geodiff train`` under torchrun (2 gloo processes): a worker is killed, the same command resumes from the
checkpoint rank 0 wrote, and the result matches an uninterrupted single-process run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

import geodiff
from geodiff.cli import app
from geodiff.training.checkpoint import latest_checkpoint
from tests.batch.helpers import synthetic_ocean
from tests.training.test_training_ddp import free_port

STEPS = 30


def torchrun(config, cwd):
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             f"--master_port={free_port()}", "-m", "geodiff.cli", "train", "--config", str(config)],
                            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except psutil.Error:
            continue
    return None


@pytest.mark.distributed
def test_torchrun_training_survives_a_killed_worker(tmp_path):
    synthetic_ocean(8).to_netcdf(tmp_path / "ocean.nc")
    settings = {"data": "ocean.nc", "output": "bundle", "checkpoint_dir": "checkpoints", "progress": False,
                "model": {"base_channels": 8, "channel_mults": [1, 2]},
                "training": {"steps": STEPS, "batch_size": 4, "seed": 2, "checkpoint_every": 5, "lr": 1e-3}}
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(settings))

    launcher = torchrun(config, tmp_path)
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and launcher.poll() is None:
        checkpoint = latest_checkpoint(tmp_path / "checkpoints")
        worker = rank_process(launcher, 1)
        if checkpoint is not None and worker is not None:
            worker.send_signal(signal.SIGKILL)  # the rank that does not write checkpoints
            killed_at = checkpoint.name
            break
        time.sleep(0.02)
    _, err = launcher.communicate(timeout=120)
    assert killed_at is not None, f"no checkpoint before the run ended: {err[-2000:]}"
    assert launcher.returncode != 0  # torchrun reports the lost worker
    stopped = latest_checkpoint(tmp_path / "checkpoints").name
    assert stopped < f"step-{STEPS:08d}" and not (tmp_path / "bundle").exists()

    launcher = torchrun(config, tmp_path)  # the same command again
    _, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, err[-3000:]
    resumed = geodiff.load(tmp_path / "bundle")
    assert resumed.metadata["training"]["steps"] == STEPS
    assert resumed.metadata["training"]["resumed_from"] == stopped

    single = {**settings, "output": "single", "checkpoint_dir": "single_checkpoints"}
    (tmp_path / "single.yaml").write_text(yaml.safe_dump(single))
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "single.yaml")])
    assert result.exit_code == 0, result.output
    reference = geodiff.load(tmp_path / "single").denoiser.state_dict()
    worst = max(float((tensor - reference[name]).abs().max()) for name, tensor in resumed.denoiser.state_dict().items())
    assert worst < 1e-4, worst  # DDP's reduced gradients differ from one process's by float rounding only
