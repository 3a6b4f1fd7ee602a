"""Reward alignment of assimilation priors (Align-DA): rewards and preference fine-tuning.

- :mod:`~geodiff.alignment.rewards`: observation accuracy, forecast skill, geostrophic balance, spectral slope
  (plugin kind ``"reward"``), and their weighted sum;
- :mod:`~geodiff.alignment.dpo`: Diffusion-DPO fine-tuning regularised to a frozen reference.

Guidance at sampling time lives with the other guidance methods: reward-gradient guidance in
:mod:`geodiff.guidance.reward`, observation guidance through a decoder in :mod:`geodiff.guidance.latent_mmps`.
"""
