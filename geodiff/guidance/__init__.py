"""Guidance: conditioning a diffusion prior on observations, one method per module.

================  ==========================================  ==============================================
registry name     class                                       acts as
================  ==========================================  ==============================================
``reconmost``     :class:`~.reconmost.ReconMOSTGuidance`      transition hook (DDPM mean shift, no backprop)
``dps``           :class:`~.dps.DPSGuidance`                  denoiser wrapper (+ hook for Chung's steps)
``mmps``          :class:`~.mmps.MMPSGuidance`                denoiser wrapper (Tweedie covariance, CG)
``sda``           :class:`~.mmps.SDAGuidance`                 denoiser wrapper (diagonal covariance)
``repaint``       :class:`~.repaint.RePaintGuidance`          sampler wrapper (replacement + resampling)
``coarse``        :class:`~.coarse.CoarseGuidance`            denoiser wrapper (MMPS with area-mean operator)
================  ==========================================  ==============================================

All are built as ``Method(y, A, error_std, **settings)`` in normalised units and sample with
``guidance.sample(sampler, denoiser, noise, sigmas, generator=...)``; see :mod:`geodiff.guidance.base`.

Example
-------
>>> from geodiff import registry
>>> registry.get("guidance", MMPSGuidance) is MMPSGuidance
True
"""

from geodiff.guidance.base import CombinedGuidance, Guidance, combine
from geodiff.guidance.coarse import CoarseGuidance
from geodiff.guidance.dps import DPSGuidance
from geodiff.guidance.mmps import MMPSGuidance, SDAGuidance
from geodiff.guidance.reconmost import ReconMOSTGuidance
from geodiff.guidance.repaint import RePaintGuidance, RePaintSampler

__all__ = [
    "Guidance",
    "CombinedGuidance",
    "combine",
    "ReconMOSTGuidance",
    "DPSGuidance",
    "MMPSGuidance",
    "SDAGuidance",
    "RePaintGuidance",
    "RePaintSampler",
    "CoarseGuidance",
]
