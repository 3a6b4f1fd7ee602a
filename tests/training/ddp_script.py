"""Run by test_training_ddp.py under ``python -m torch.distributed.run --nproc_per_node=2 ddp_script.py OUT``
(the test calls :func:`run_cases` in its own process for the single-process reference).

Trains a tiny denoiser (one step on whole fields, one step on random crops, three steps on whole fields) with
gradient clipping off and writes the gradients, parameters and losses of this rank to
``OUT-<case>-rank<r>.safetensors``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root

CASES = (("full", None, 1), ("patch", (2, 3), 1), ("multi", None, 3))


def run_cases(out: str) -> None:
    import torch
    from safetensors.torch import save_file
    from tests.training.training_helpers import SHAPE, gaussian_data, tiny_denoiser

    import geodiff

    rank = int(os.environ.get("RANK", "0"))
    mask = torch.ones(SHAPE, dtype=torch.bool)
    mask[:, 0, :3] = False  # some land
    for case, patch_size, steps in CASES:
        result = geodiff.train(
            tiny_denoiser(seed=1),
            gaussian_data(40, seed=2),
            mask=mask,
            steps=steps,
            batch_size=8,
            lr=1e-3,
            grad_clip=None,
            patch_size=patch_size,
            seed=5,
            progress=False,
        )
        tensors = {f"grad.{n}": p.grad for n, p in result.denoiser.named_parameters()}
        tensors.update({f"param.{n}": p.detach() for n, p in result.denoiser.named_parameters()})
        tensors["losses"] = torch.tensor(result.losses, dtype=torch.float64)
        save_file({k: v.contiguous() for k, v in tensors.items()}, f"{out}-{case}-rank{rank}.safetensors")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    run_cases(sys.argv[1])
    from geodiff.training.distributed import _destroy

    _destroy()  # leave the group together, before interpreter shutdown
