"""Run by test_batch_resume.py in a subprocess (which it kills): ``python batch_script.py BUNDLE STORE``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root

if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    from geodiff.batch import run_batch
    from tests.batch.helpers import RUN, reconstruct_job

    run_batch(reconstruct_job(sys.argv[1]), sys.argv[2], **RUN)
