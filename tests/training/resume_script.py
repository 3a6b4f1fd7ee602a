"""Run by test_training_resume.py: ``python resume_script.py CASE CHECKPOINT_DIR STEPS EVERY STALL_AT``.

Trains like the resume tests with checkpoints; once the checkpoint of step STALL_AT exists, loading the next batch
hangs (so the test can SIGKILL the process in the middle of a run).
"""

import os
import sys
import time

if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root
    from torch.utils.data import Dataset
    from tests.training.training_helpers import resume_case

    import geodiff

    case, checkpoint_dir, steps, every, stall_at = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    stall_marker = os.path.join(checkpoint_dir, f"step-{stall_at:08d}", "manifest.json")

    class StallingFields(Dataset):
        def __init__(self, data):
            self.data = data

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            if os.path.exists(stall_marker):
                print("stalled", flush=True)
                time.sleep(600)
            return self.data[i]

    denoiser, data, settings = resume_case(case)
    geodiff.train(denoiser, StallingFields(data), steps=steps, checkpoint_dir=checkpoint_dir, checkpoint_every=every,
                  progress=False, **settings)
