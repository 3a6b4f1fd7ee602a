"""Guidance: conditioning a diffusion prior on observations or a reward, one method per module.

Each method is a :class:`~geodiff.guidance.base.Guidance` (its settings; observation guidance also its data
``(y, A, error_std)``, a :class:`~geodiff.guidance.likelihood.GaussianLikelihood`) that builds a **denoiser
wrapper** (changes ``x0_hat`` only) or a **sampler wrapper** (overrides the sampler's step: changes the
transition); see :mod:`geodiff.guidance.base`.

================  ==========================================  ===============================================
registry name     class                                       acts as
================  ==========================================  ===============================================
``mmps``          :class:`~.mmps.MMPSGuidance`                denoiser wrapper :class:`~.mmps.MMPSDenoiser`
                                                              (Tweedie covariance: conjugate gradients,
                                                              or an exact solve for spectral priors)
``sda``           :class:`~.mmps.SDAGuidance`                 the same with a diagonal covariance
``coarse``        :class:`~.coarse.CoarseGuidance`            the same with an area-mean operator (+ stations)
``latent_mmps``   :class:`~.latent_mmps.LatentMMPSGuidance`   denoiser wrapper :class:`~.latent_mmps.LatentMMPSDenoiser`
                                                              (MMPS through a decoder, linearised)
``dps``           :class:`~.dps.DPSGuidance`                  denoiser wrapper :class:`~.dps.DPSDenoiser`; with
                                                              ``convention="chung"`` also :class:`~.dps.DPSChungSampler`
``reward``        :class:`~.reward.RewardGuidance`            denoiser wrapper :class:`~.reward.RewardDenoiser`
``reconmost``     :class:`~.reconmost.ReconMOSTGuidance`      sampler wrapper :class:`~.reconmost.ReconMOSTSampler`
                                                              (DDPM mean shift, no backprop)
``repaint``       :class:`~.repaint.RePaintGuidance`          sampler wrapper :class:`~.repaint.RePaintSampler`
                                                              (replacement + resampling)
================  ==========================================  ===============================================

Observation guidance is built as ``Method(y, A, error_std, **settings)`` in normalised units, reward guidance as
``RewardGuidance(reward, **settings)``; both sample with ``guidance.sample(sampler, denoiser, noise, sigmas,
generator=...)`` and combine with :func:`~geodiff.guidance.combined.combine`. Each module documents its step size.
A new method is one module with a :class:`~geodiff.guidance.base.Guidance` subclass and its
:class:`~geodiff.guidance.base.GuidedDenoiser` or :class:`~geodiff.guidance.base.GuidedSampler`, listed in
:mod:`geodiff.registry` (or registered through the entry-point group ``geodiff.guidance``).

Example
-------
>>> from geodiff import registry
>>> registry.get("guidance", "mmps") is MMPSGuidance, registry.name_of("guidance", LatentMMPSGuidance)
(True, 'latent_mmps')
"""

from geodiff.guidance.base import Guidance, GuidedDenoiser, GuidedSampler, ObservationGuidance, observation_method
from geodiff.guidance.coarse import CoarseGuidance
from geodiff.guidance.combined import CombinedGuidance, Unguided, combine
from geodiff.guidance.dps import DPSChungSampler, DPSDenoiser, DPSGuidance
from geodiff.guidance.latent_mmps import DecodedOperator, LatentMMPSDenoiser, LatentMMPSGuidance
from geodiff.guidance.likelihood import GaussianLikelihood
from geodiff.guidance.mmps import MMPSDenoiser, MMPSGuidance, SDAGuidance
from geodiff.guidance.reconmost import ReconMOSTGuidance, ReconMOSTSampler
from geodiff.guidance.repaint import RePaintGuidance, RePaintSampler
from geodiff.guidance.reward import RewardDenoiser, RewardGuidance

__all__ = [
    "Guidance",
    "ObservationGuidance",
    "observation_method",
    "GuidedDenoiser",
    "GuidedSampler",
    "GaussianLikelihood",
    "CombinedGuidance",
    "Unguided",
    "combine",
    "MMPSGuidance",
    "MMPSDenoiser",
    "SDAGuidance",
    "CoarseGuidance",
    "LatentMMPSGuidance",
    "LatentMMPSDenoiser",
    "DecodedOperator",
    "DPSGuidance",
    "DPSDenoiser",
    "DPSChungSampler",
    "RewardGuidance",
    "RewardDenoiser",
    "ReconMOSTGuidance",
    "ReconMOSTSampler",
    "RePaintGuidance",
    "RePaintSampler",
]
