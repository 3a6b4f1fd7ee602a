"""Reward alignment of assimilation priors (Align-DA): rewards, preference fine-tuning, reward and latent guidance.

- :mod:`~geodiff.alignment.rewards`: observation accuracy, forecast skill, geostrophic balance, spectral slope
  (plugin kind ``"reward"``), and their weighted sum;
- :mod:`~geodiff.alignment.dpo`: Diffusion-DPO fine-tuning regularised to a frozen reference;
- :mod:`~geodiff.alignment.reward_guidance`: reward-gradient guidance at sampling time;
- :mod:`~geodiff.alignment.latent_guidance`: observation guidance through a decoder (DPS, linearised MMPS).
"""
