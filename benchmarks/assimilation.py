"""Reward-aligned data assimilation in a twin experiment: latent diffusion DA against 3D-Var and an LETKF.

Twin: the barotropic beta-plane model (:class:`geodiff.dynamics.BarotropicModel`, 32 x 32, 6000 km square,
forced-dissipative turbulence) gives the truth. Observations: ``z``, ``u``, ``v`` at 64 fixed random sites every
24 h (errors 5 m and 1 m/s); 32 more sites are held out (scored by the observation-accuracy reward only).
The diffusion model (latent autoencoder 3x32x32 -> 4x16x16 + background-conditioned latent UNet) is trained on
pairs (truth, background) where the background is a 24 h forecast from the truth perturbed by a balanced field of
random rms wind 0.3-3 m/s. Baselines: 3D-Var with a static B = covariance of the same training background errors
(shrunk to its diagonal by 10 %, scaled by 0.5/1/2: all reported), and a 20-member LETKF (Gaspari-Cohn
localisation, multiplicative inflation; three settings) that forecasts every member with the twin model. Every
method cycles over the same window (15 cycles of 24 h). Alignment: Diffusion-DPO on pairs of MMPS-guided analyses
of training cases ranked by the forecast-skill reward; reward-gradient guidance with the same reward.

Stages (each trains or runs for at most ~10 minutes on one thread; artefacts in ``--workdir``)::

    python benchmarks/assimilation.py data       # truth runs, training pairs, observation sites
    python benchmarks/assimilation.py train      # autoencoder + latent prior
    python benchmarks/assimilation.py align      # Diffusion-DPO (--dpo-lr, --dpo-beta, --tag, --pair-members, ...)
    python benchmarks/assimilation.py align-eval # paired test of aligned vs unaligned (--tags _c,...)
    python benchmarks/assimilation.py evaluate   # cycling; --methods subset, --results file (they accumulate)
    python benchmarks/assimilation.py table      # Markdown tables of every results*.json in --workdir

``--methods`` names: ``baselines``, ``letkf``, ``dps``, ``dps_chung``, ``mmps``, ``mmps16``, ``mmps_cg2``,
``mmps_seed1``, ``mmps_clip`` (denoised latents clipped), ``dpo<tag>``, ``<method>@<seed offset>`` (e.g.
``mmps@1000``, ``dpo_c@1000``: other sampling seeds; ``table`` then adds mean +- s.e. over the seed offsets),
``reward_<scale>``, ``cycle_api``.
``align-eval --tags _c,...`` compares aligned policies with the unaligned model on many independent test cases
with identical sampling seeds (paired changes with standard errors; cached in ``align_eval.json``).
``--quick`` shrinks everything (smoke run). Scripts need the package importable (``PYTHONPATH=.`` in a checkout).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from geodiff.alignment.dpo import dpo_finetune
from geodiff.alignment.rewards import ForecastSkill, GeostrophicBalance, ObservationAccuracy, SpectralSlope
from geodiff.baselines.etkf import etkf, gaspari_cohn
from geodiff.baselines.var3d import fit_background_covariance, var3d_analysis
from geodiff.diffusion.denoiser import Denoiser
from geodiff.dynamics import BarotropicModel
from geodiff.dynamics.barotropic import EARTH_RADIUS
from geodiff.dynamics.twin import backgrounds, observation_sites, perturb, truth_run
from geodiff.operators import PointOperator
from geodiff.pipelines.assimilate import AssimilationModel, cycle, sample_analysis, twin_dataset

DAY = 86400.0
ERRORS = {"z": 5.0, "u": 1.0, "v": 1.0}
VARIABLES = ("z", "u", "v")


def settings(quick: bool) -> dict:
    if quick:
        return dict(train_times=120, cycles=4, sites=64, heldout_sites=32, members=4, steps=8, ae_steps=50,
                    prior_steps=50, pairs=8, pair_members=4, dpo_steps=10, etkf_members=10, eval_cases=4,
                    eval_members=2)
    return dict(train_times=1200, cycles=15, sites=64, heldout_sites=32, members=6, steps=10, ae_steps=600,
                prior_steps=1500, pairs=48, pair_members=6, dpo_steps=150, etkf_members=20, eval_cases=64,
                eval_members=8)


def twin_model() -> BarotropicModel:
    return BarotropicModel(nx=32, ny=32)


def times_of(n: int, start: str, step_hours: int) -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(step_hours, "h")


# ---------------------------------------------------------------------------------------------------- data


def stage_data(work: Path, cfg: dict) -> None:
    model = twin_model()
    t0 = time.perf_counter()
    # training: truth every 12 h; backgrounds for truth[2:] are 24 h forecasts of perturbed truth[:-2]
    train = truth_run(model, cfg["train_times"] + 2, 0.5 * DAY, spin_up_s=200 * DAY, seed=1)
    amplitude = torch.empty(train.shape[0] - 2).uniform_(0.3, 3.0, generator=torch.Generator().manual_seed(2))
    noise = model.random_state(train.shape[0] - 2, generator=torch.Generator().manual_seed(3), rms_wind=1.0)
    background = torch.cat([model.forecast(chunk, DAY) for chunk in
                            (train[:-2] + amplitude[:, None, None, None] * noise).split(256)])  # fmt: skip
    # test window: truth every 24 h (cycles + 2 for the verifying forecasts), from another spin-up
    test = truth_run(model, cfg["cycles"] + 3, DAY, spin_up_s=300 * DAY, seed=11)
    first_background = backgrounds(model, test[:1], DAY, rms_wind=2.0, seed=12)
    lat, lon = observation_sites(model, cfg["sites"] + cfg["heldout_sites"], seed=13)
    save_file({"train_truth": train[2:].contiguous(), "train_background": background.contiguous(),
               "test_truth": test[1:].contiguous(), "first_background": first_background.contiguous(),
               "site_lat": torch.from_numpy(lat), "site_lon": torch.from_numpy(lon)},
              str(work / "data.safetensors"))  # fmt: skip
    err = (background - train[2:])
    print(f"data: {train.shape[0] - 2} training pairs, background rms error z {err[:, 0].pow(2).mean().sqrt():.2f} m, "
          f"wind {err[:, 1:].pow(2).mean().sqrt():.2f} m/s; climatological std z {train[:, 0].std():.1f} m, "
          f"wind {train[:, 1:].std():.2f} m/s; {time.perf_counter() - t0:.1f} s")


def load_data(work: Path) -> dict:
    return load_file(str(work / "data.safetensors"))


# ---------------------------------------------------------------------------------------------------- train


def stage_train(work: Path, cfg: dict) -> None:
    data, model = load_data(work), twin_model()
    times = times_of(data["train_truth"].shape[0], "2000-01-01", 12)
    truth = twin_dataset(model, data["train_truth"], times)
    background = twin_dataset(model, data["train_background"], times)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    da = AssimilationModel.fit(truth, background, autoencoder_steps=cfg["ae_steps"], prior_steps=cfg["prior_steps"],
                               batch_size=32, seed=0, progress=True)  # fmt: skip
    da.save(work / "model", overwrite=True)
    print(f"train: {time.perf_counter() - t0:.0f} s; {json.dumps(da.prior.metadata)}")


# ---------------------------------------------------------------------------------------------------- cases


class Case:
    """One analysis time of the twin: truth, operators of assimilated / held-out sites, rewards."""

    def __init__(self, model: BarotropicModel, data: dict, cfg: dict, truth: torch.Tensor, later: torch.Tensor,
                 seed: int, slope_target: float):  # fmt: skip
        coords = model.coordinates()
        lat, lon = data["site_lat"].numpy(), data["site_lon"].numpy()
        n = cfg["sites"]
        channels = [(v, None) for v in VARIABLES]
        rng = np.random.default_rng(seed)

        def operator(la, lo):
            return PointOperator(coords["lat"], coords["lon"], np.tile(la, 3), np.tile(lo, 3),
                                 variable=np.repeat(VARIABLES, la.size), channels=channels)  # fmt: skip

        def observe(op, state, size):
            std = np.repeat([ERRORS[v] for v in VARIABLES], size)
            value = op(state[None].double())[0].numpy() + rng.normal(0, std)
            return torch.from_numpy(value), torch.from_numpy(std)

        self.truth, self.later = truth, later
        self.operator = operator(lat[:n], lon[:n])
        self.y, self.error_std = observe(self.operator, truth, n)
        heldout = operator(lat[n:], lon[n:])
        y_h, e_h = observe(heldout, truth, lat.size - n)
        every = operator(lat, lon)
        y_l, e_l = observe(every, later, lat.size)
        self.rewards = {
            "observation_accuracy": ObservationAccuracy(heldout, y_h, e_h),
            "forecast_skill": ForecastSkill(model, DAY, operator=every, y=y_l, error_std=e_l),
            "geostrophic_balance": GeostrophicBalance(f0=model.f0, dx=model.dx, dy=model.dy),
            "spectral_slope": SpectralSlope(target=slope_target, length_x=model.length_x, band=(3, 10)),
        }

    def scores(self, states: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            return {name: float(r(states.double()).mean()) for name, r in self.rewards.items()}


def slope_of_training(model: BarotropicModel, data: dict) -> float:
    reward = SpectralSlope(target=0.0, length_x=model.length_x, band=(3, 10))
    return float(reward.slope(data["train_truth"][::10]).mean())


def rmse(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    """Mean over variables of RMSE / climatological std (``[.., 3, H, W]``)."""
    err = ((a - b) / scale[:, None, None]).pow(2).mean(dim=(-2, -1))
    return float(err.reshape(-1, 3).mean(0).sqrt().mean())


def rmse_by_variable(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return [float((a[..., c, :, :] - b[..., c, :, :]).pow(2).mean().sqrt()) for c in range(3)]


# ---------------------------------------------------------------------------------------------------- align


REWARDS = ("observation_accuracy", "forecast_skill", "geostrophic_balance", "spectral_slope")


def training_samples(work: Path, cfg: dict, da: AssimilationModel, model: BarotropicModel, data: dict) -> dict:
    """MMPS analyses of ``cfg["pairs"]`` training cases, ``cfg["pair_members"]`` each, with every reward.

    Cached in ``samples_m<M>_n<N>[_clip].safetensors``: ``latents [N, M, Z, h, w]``, ``conds [N, Z, h, w]``
    (encoded backgrounds), ``rewards [N, M, 4]`` (order of ``REWARDS``). Cases are training times only.
    ``cfg["clip_latent"]``: sample with clipped latents.
    """
    clip = cfg.get("clip_latent")
    path = work / f"samples_m{cfg['pair_members']}_n{cfg['pairs']}{'_clip' if clip else ''}.safetensors"
    if path.exists():
        print(f"align: reusing samples from {path.name}")
        return load_file(str(path))
    slope = slope_of_training(model, data)
    truth, background = data["train_truth"], data["train_background"]
    # cases: training times with a truth 24 h later (index + 2 at 12 h spacing); none from the test window
    index = torch.randperm(truth.shape[0] - 2, generator=torch.Generator().manual_seed(5))[: cfg["pairs"]]
    latents, conds, rewards = [], [], []
    t0 = time.perf_counter()
    for k, i in enumerate(tqdm(index.tolist(), desc="training samples")):
        case = Case(model, data, cfg, truth[i], truth[i + 2], seed=1000 + k, slope_target=slope)
        generator = torch.Generator().manual_seed(2000 + k)
        states, z = sample_analysis(da, background[i].float(), operator=case.operator, y=case.y,
                                    error_std=case.error_std, members=cfg["pair_members"], steps=cfg["steps"],
                                    generator=generator, clip_latent=clip)  # fmt: skip
        with torch.no_grad():
            rewards.append(torch.stack([case.rewards[name](states.double()) for name in REWARDS], 1))
        latents.append(z)
        conds.append(da.encode(background[i][None].float())[0])
    samples = {"latents": torch.stack(latents).contiguous(), "conds": torch.stack(conds).contiguous(),
               "rewards": torch.stack(rewards).contiguous()}  # fmt: skip
    save_file(samples, str(path))
    print(f"align: {len(index)} cases x {cfg['pair_members']} samples ({time.perf_counter() - t0:.0f} s)")
    return samples


def preference_pairs(samples: dict, weights: dict[str, float], per_case: int, keep: float) -> dict:
    """Pairs (k-th best, k-th worst) per case by ``sum_r weights[r] z_r``, ``z_r`` = reward standardised over
    the case's members; keeps the fraction ``keep`` of cases with the largest forecast-skill gap (winners minus
    losers, relative to the case's mean |forecast skill|). Returns winners/losers/conds ``[P, ...]``, ``case [P]``."""
    rewards = samples["rewards"].double()  # [N, M, R]
    z = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-12)
    score = sum(weights.get(name, 0.0) * z[..., r] for r, name in enumerate(REWARDS))  # [N, M]
    order = score.argsort(1, descending=True)
    best, worst = order[:, :per_case], order[:, -per_case:].flip(1)
    skill = rewards[..., REWARDS.index("forecast_skill")]
    gap = (skill.gather(1, best) - skill.gather(1, worst)).mean(1) / skill.abs().mean(1)
    cases = gap.argsort(descending=True)[: max(1, round(keep * gap.numel()))].sort().values
    n_lat = samples["latents"]
    pick = lambda idx: n_lat[cases[:, None], idx[cases]].flatten(0, 1)  # noqa: E731
    return {"winners": pick(best), "losers": pick(worst),
            "conds": samples["conds"][cases].repeat_interleave(per_case, 0),
            "case": cases.repeat_interleave(per_case), "gap": gap[cases]}  # fmt: skip


def stage_align(work: Path, cfg: dict, lr: float = 2e-5, beta: float = 2000.0, tag: str = "",
                weights: dict[str, float] | None = None, per_case: int = 1, keep: float = 1.0,
                holdout: float = 0.0, sft_weight: float = 0.0, eval_every: int = 10) -> None:  # fmt: skip
    data, model = load_data(work), twin_model()
    da = AssimilationModel.load(work / "model")
    samples = training_samples(work, cfg, da, model, data)
    weights = weights or {"forecast_skill": 1.0}
    pairs = preference_pairs(samples, weights, per_case, keep)
    n_cases = int(pairs["case"].unique().numel())
    held = int(round(holdout * n_cases))
    cut = pairs["case"].unique()[n_cases - held] if held else None  # hold out whole cases (the last ones)
    train = torch.ones_like(pairs["case"], dtype=torch.bool) if cut is None else pairs["case"] < cut
    validation = None if cut is None else (pairs["winners"][~train], pairs["losers"][~train],
                                           {"concat": pairs["conds"][~train]})  # fmt: skip
    policy = copy.deepcopy(da.denoiser)
    result = dpo_finetune(policy, pairs["winners"][train], pairs["losers"][train],
                          cond={"concat": pairs["conds"][train]}, steps=cfg["dpo_steps"], batch_size=16, beta=beta,
                          lr=lr, sft_weight=sft_weight, seed=0, validation=validation, eval_every=eval_every,
                          progress=False)  # fmt: skip
    policy.save_pretrained(work / f"aligned{tag}")
    info = {"lr": lr, "beta": beta, "steps": cfg["dpo_steps"], "weights": weights, "per_case": per_case,
            "keep": keep, "cases": n_cases, "held_out_cases": held, "train_pairs": int(train.sum()),
            "pair_members": cfg["pair_members"], "sft_weight": sft_weight, "best_step": result.best_step,
            "mean_gap": float(pairs["gap"].mean()), "seconds": result.seconds,
            "loss_first10": float(np.mean(result.losses[:10])), "loss_last10": float(np.mean(result.losses[-10:])),
            "validation_losses": result.validation_losses}  # fmt: skip
    (work / f"aligned{tag}" / "alignment.json").write_text(json.dumps(info, indent=1))
    print(f"DPO{tag}: " + json.dumps({k: v for k, v in info.items() if k != "validation_losses"}))
    if result.validation_losses:
        print("validation loss every", eval_every, "steps:", " ".join(f"{v:.4f}" for v in result.validation_losses))


# ---------------------------------------------------------------------------------------------------- align-eval


def alignment_cases(model: BarotropicModel, data: dict, cfg: dict) -> tuple[list[Case], torch.Tensor]:
    """``cfg["eval_cases"]`` independent analysis times of the test truth run (the cycling run extended, one
    case every 2 days from day ``cfg["eval_start"]`` + 1), each with a background = 24 h forecast of the truth
    perturbed by rms wind 2 m/s (the same perturbation fields, seed 40, for every ``eval_start``)."""
    n, start = cfg["eval_cases"], cfg.get("eval_start", 0)
    run = truth_run(model, start + 2 * n + 2, DAY, spin_up_s=300 * DAY, seed=11)  # starts as the cycling window
    at = start + torch.arange(1, 2 * n + 1, 2)
    bgs = backgrounds(model, run[at - 1], DAY, rms_wind=2.0, seed=40)
    slope = slope_of_training(model, data)
    cases = [Case(model, data, cfg, run[t], run[t + 1], seed=700 + k, slope_target=slope)
             for k, t in enumerate(at.tolist())]  # fmt: skip
    return cases, bgs


def score_cases(da, model, data, cfg, cases, bgs, denoiser=None, clip_latent=None) -> dict[str, list[float]]:
    """Per case: every reward (member mean) and the analysis RMSE of the member mean; seeds fixed per case."""
    scale = data["train_truth"].double().std(dim=(0, 2, 3))
    out: dict[str, list] = {name: [] for name in (*REWARDS, "analysis_rmse", "forecast_skill_members")}
    for k, case in enumerate(tqdm(cases, desc="align-eval")):
        generator = torch.Generator().manual_seed(30_000 + k)  # identical for every model
        states, _ = sample_analysis(da, bgs[k].float(), operator=case.operator, y=case.y, error_std=case.error_std,
                                    members=cfg["eval_members"], steps=cfg["steps"], generator=generator,
                                    denoiser=denoiser, clip_latent=clip_latent)  # fmt: skip
        for name, value in case.scores(states).items():
            out[name].append(value)
        out["analysis_rmse"].append(rmse(states.double().mean(0), case.truth.double(), scale))
        with torch.no_grad():
            out["forecast_skill_members"].append(case.rewards["forecast_skill"](states.double()).tolist())
    return out


def paired_change(base: np.ndarray, new: np.ndarray, *, lower_is_better: bool = False, boot: int = 4000,
                  seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Relative change of the case mean (%, positive = better) with paired s.e. and a bootstrap 95 % CI."""
    sign = -1.0 if lower_is_better else 1.0
    diff = sign * (new - base)
    ref = abs(base.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, base.size, (boot, base.size))
    ratios = 100 * sign * (new[idx].mean(1) - base[idx].mean(1)) / np.abs(base[idx].mean(1))
    return {"base": float(base.mean()), "new": float(new.mean()), "change": float(100 * diff.mean() / ref),
            "se": float(100 * diff.std(ddof=1) / math.sqrt(base.size) / ref),
            "ci_low": float(np.percentile(ratios, 2.5)), "ci_high": float(np.percentile(ratios, 97.5)),
            "better_cases": float(np.mean(diff > 0)),
            "median_case_change": float(100 * np.median(diff / np.abs(base)))}  # fmt: skip


def diverged_share(members: list[list[float]]) -> float:
    """Share of members (forecast skill [cases][members], negative) below twice their case's median."""
    values = np.array(members)
    return float(np.mean(values < 2 * np.median(values, axis=1, keepdims=True)))


def stage_align_eval(work: Path, cfg: dict, tags: list[str], aligned_reward: str = "forecast_skill") -> None:
    data, model = load_data(work), twin_model()
    da = AssimilationModel.load(work / "model")
    start = cfg.get("eval_start", 0)
    path = work / ("align_eval.json" if start == 0 else f"align_eval_s{start}.json")
    key = {k: cfg[k] for k in ("eval_cases", "eval_members", "steps")}
    store = json.loads(path.read_text()) if path.exists() else {}
    if store.get("settings") != key:
        store = {"settings": key, "models": {}}
    cases, bgs = alignment_cases(model, data, cfg)
    for tag in ["unaligned", *tags]:
        if tag in store["models"]:
            continue
        # "clip": the unaligned model with clipped latents; "<tag>+clip": an aligned one with clipped latents
        policy, _, clipped = tag.partition("+")
        clip_latent = LATENT_CLIP if "clip" in (policy, clipped) else None
        policy = "unaligned" if policy == "clip" else policy
        denoiser = None if policy == "unaligned" else Denoiser.from_pretrained(work / f"aligned{policy}")
        t0 = time.perf_counter()
        store["models"][tag] = score_cases(da, model, data, cfg, cases, bgs, denoiser, clip_latent)
        print(f"align-eval {tag}: {time.perf_counter() - t0:.0f} s")
        path.write_text(json.dumps(store))
    print(f"\n### Paired evaluation of alignment ({cfg['eval_cases']} test cases from day {start + 1}, "
          f"{cfg['eval_members']} members, identical seeds per case)\n")
    print("Change of the case mean relative to the unaligned model (with clipped latents for \"<tag>+clip\"; "
          "positive = better) +- paired s.e. "
          "[bootstrap 95 % CI over cases]; median per-case change, share of cases where the aligned model is "
          "better. Bar: aligned reward > 2 s.e. and no other reward below -5 %.\n")
    print("| model | " + " | ".join((*REWARDS, "analysis RMSE")) + " | bar |")
    print("|---|" + "---|" * (len(REWARDS) + 2))
    for tag in [t for t in store["models"] if t != "unaligned" and (not tags or t in tags)]:
        # an aligned policy with clipped latents is compared with the unaligned model with clipped latents
        base = store["models"]["clip" if tag.endswith("+clip") and "clip" in store["models"] else "unaligned"]
        cells, changes = [], {}
        for name in (*REWARDS, "analysis_rmse"):
            c = paired_change(np.array(base[name]), np.array(store["models"][tag][name]),
                              lower_is_better=name == "analysis_rmse")  # fmt: skip
            changes[name] = c
            cells.append(f"{c['change']:+.1f} +- {c['se']:.1f} % [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}]; "
                         f"{c['median_case_change']:+.1f} %, {100 * c['better_cases']:.0f} %")
        aligned = changes[aligned_reward]
        others = [changes[n]["change"] for n in REWARDS if n != aligned_reward]
        met = aligned["change"] > 2 * aligned["se"] and min(others) > -5.0
        print(f"| {tag} | " + " | ".join(cells) + f" | {'met' if met else 'not met'} |")
    print("\nmembers whose forecast skill is below twice their case's median (diverged): " + ", ".join(
        f"{tag} {100 * diverged_share(m['forecast_skill_members']):.1f} %" for tag, m in store["models"].items()
        if "forecast_skill_members" in m))
    for tag in ("unaligned", "clip"):
        if tag in store["models"]:
            means = ", ".join(f"{n} {np.mean(store['models'][tag][n]):.4f}" for n in (*REWARDS, "analysis_rmse"))
            print(f"\n{tag} case means: {means}")


# ---------------------------------------------------------------------------------------------------- evaluate


def cycle_var3d(model, data, cases, b_matrix, factor):
    background = data["first_background"][0].double()
    analyses, bgs = [], []
    for case in cases:
        h = case.operator.to_sparse().to_dense().numpy()
        xa = var3d_analysis(background.reshape(-1).numpy(), factor * b_matrix, h, case.y.numpy(),
                            case.error_std.numpy())
        analysis = torch.from_numpy(xa).reshape(background.shape)
        analyses.append(analysis)
        bgs.append(background)
        background = model.forecast(analysis[None], DAY)[0]
    return torch.stack(analyses), torch.stack(bgs)


def cycle_letkf(model, data, cases, members, radius_m=1.5e6, inflation=1.1):
    coords = model.coordinates()
    x, y = np.meshgrid(coords["x"], coords["y"])
    points = np.stack([x.ravel(), y.ravel()], 1)  # [H*W, 2]
    n_sites = cases[0].operator.n_obs // 3
    lat, lon = data["site_lat"].numpy()[:n_sites], data["site_lon"].numpy()[:n_sites]
    site_y = np.radians(lat - model.lat0) * EARTH_RADIUS
    site_x = np.radians(lon - model.lon0) * EARTH_RADIUS * math.cos(math.radians(model.lat0))
    sites = np.tile(np.stack([site_x, site_y], 1), (3, 1))
    delta = np.abs(points[:, None, :] - sites[None])
    delta = np.minimum(delta, np.array([model.length_x, model.length_y]) - delta)
    localization = gaspari_cohn(np.hypot(delta[..., 0], delta[..., 1]), radius_m / 2)
    state_point = np.tile(np.arange(points.shape[0]), 3)
    ensemble = perturb(model, data["first_background"].double().repeat(members, 1, 1, 1), rms_wind=2.0, seed=21)
    analyses, bgs = [], []
    for case in cases:
        h = case.operator.to_sparse().to_dense().numpy()
        flat = ensemble.reshape(members, -1).numpy()
        xa = etkf(flat, h, case.y.numpy(), case.error_std.numpy(), inflation=inflation, localization=localization,
                  state_point=state_point)  # fmt: skip
        analysis = torch.from_numpy(xa).reshape(ensemble.shape)
        analyses.append(analysis.mean(0))
        bgs.append(ensemble.mean(0))
        ensemble = model.forecast(analysis, DAY)
    return torch.stack(analyses), torch.stack(bgs)


def cycle_diffusion(model, da, data, cases, cfg, times, **options):
    first = twin_dataset(model, data["first_background"], times[:1])
    lat, lon = data["site_lat"].numpy()[: cfg["sites"]], data["site_lon"].numpy()[: cfg["sites"]]
    table = xr.concat([twin_obs_table(case, lat, lon, t) for case, t in zip(cases, times)], dim="obs")
    t0 = time.perf_counter()
    result = cycle(da, model, first, table, times, interval_s=DAY, members=cfg["members"], steps=cfg["steps"],
                   seed=0, progress=False, **options)  # fmt: skip
    seconds = time.perf_counter() - t0
    codec = da.codec
    members = torch.stack([codec.encode(result.analysis.isel(member=m)[list(VARIABLES)])[0]
                           for m in range(result.analysis.sizes["member"])], 1).double()  # [T, M, 3, H, W]
    bgs = codec.encode(result.background[list(VARIABLES)])[0].double()
    return members, bgs, seconds


def twin_obs_table(case, lat, lon, time):
    """The assimilated observations of a case as a table (physical units, one row per site and variable)."""
    n = case.operator.n_obs // 3
    return xr.Dataset(
        {"value": ("obs", case.y.numpy()), "error_std": ("obs", case.error_std.numpy())},
        coords={"lat": ("obs", np.tile(lat, 3)), "lon": ("obs", np.tile(lon, 3)),
                "time": ("obs", np.full(3 * n, time)), "variable": ("obs", np.repeat(VARIABLES, n))},
    )  # fmt: skip


def forecast_rmse(model, analyses, truth_later, scale):
    forecasts = model.forecast(analyses.double(), DAY)
    return rmse(forecasts, truth_later, scale)


#: bound of the denoised latents for the "clip" variants: 1.26 x the largest |z| of the 1200 training latents (3.18)
LATENT_CLIP = 4.0

VARIANTS = {
    "dps": ("latent diffusion, DPS (score, scale 1)", dict(guidance="dps")),
    "dps_chung": ("latent diffusion, DPS (Chung, scale 1)",
                  dict(guidance="dps", guidance_options={"convention": "chung"})),
    "mmps": ("latent diffusion, MMPS", dict(guidance="mmps")),
    "mmps16": ("latent diffusion, MMPS, 16 members", dict(guidance="mmps", members=16)),
    "mmps_seed1": ("latent diffusion, MMPS, other seeds (sampling noise)", dict(guidance="mmps", seed_offset=1000)),
    "mmps_cg2": ("latent diffusion, MMPS (2 CG iterations)",
                 dict(guidance="mmps", guidance_options={"cg_iterations": 2})),
    "dpo": ("latent diffusion, MMPS, DPO-aligned (forecast skill)", dict(guidance="mmps")),
    "mmps_clip": (f"latent diffusion, MMPS, denoised latents clipped to +-{LATENT_CLIP:g}",
                  dict(guidance="mmps", clip_latent=LATENT_CLIP)),
    "reward_1": ("latent diffusion, MMPS + forecast-skill guidance (x0, 1)", dict(guidance="mmps", reward_scale=1.0)),
    "reward_10": ("latent diffusion, MMPS + forecast-skill guidance (x0, 10)",
                  dict(guidance="mmps", reward_scale=10.0)),
}


def dpo_name(work: Path, tag: str) -> str:
    """Row label of a DPO policy: the rewards it was aligned to (from its ``alignment.json``) and its tag."""
    info = work / f"aligned{tag}" / "alignment.json"
    weights = json.loads(info.read_text()).get("weights") if info.exists() else None
    aligned_to = ", ".join(k.replace("_", " ") for k in weights) if weights else "forecast skill"
    return f"latent diffusion, MMPS, DPO-aligned ({aligned_to}) [{tag}]"


def stage_evaluate(work: Path, cfg: dict, methods: list[str], results_name: str = "results.json") -> None:
    torch.manual_seed(0)
    data, model = load_data(work), twin_model()
    slope = slope_of_training(model, data)
    truth = data["test_truth"].double()
    n = cfg["cycles"]
    cases = [Case(model, data, cfg, truth[t], truth[t + 1], seed=500 + t, slope_target=slope) for t in range(n)]
    scale = data["train_truth"].double().std(dim=(0, 2, 3))
    later = truth[1 : n + 1]
    path = work / results_name
    results = json.loads(path.read_text()) if path.exists() else {"rows": {}, "rewards": {}}

    def report(key, name, analysis_mean, bgs, seconds):
        results["rows"][key] = {
            "method": name,
            "background": rmse(bgs, truth[:n], scale),
            "analysis": rmse(analysis_mean, truth[:n], scale),
            "by_variable": rmse_by_variable(analysis_mean, truth[:n]),
            "forecast_from_analysis": forecast_rmse(model, analysis_mean, later, scale),
            "forecast_from_background": forecast_rmse(model, bgs, later, scale),
            "seconds": seconds,
        }  # fmt: skip
        path.write_text(json.dumps(results, indent=1))

    def letkf_rows():
        for radius_km, inflation in ((1500, 1.1), (1000, 1.3), (1000, 1.6)):
            t0 = time.perf_counter()
            analyses, bgs = cycle_letkf(model, data, cases, cfg["etkf_members"], radius_km * 1e3, inflation)
            report(f"letkf_{radius_km}_{inflation}", f"LETKF ({cfg['etkf_members']} members, GC {radius_km} km, "
                   f"inflation {inflation})", analyses, bgs, time.perf_counter() - t0)  # fmt: skip

    if "letkf" in methods and "baselines" not in methods:
        letkf_rows()
    if "baselines" in methods:
        free = [data["first_background"][0].double()]  # forecasts of the first background, never corrected
        for _ in range(n - 1):
            free.append(model.forecast(free[-1][None], DAY)[0])
        free = torch.stack(free)
        report("free", "no assimilation (free forecast)", free, free, 0.0)
        samples = data["train_truth"].shape[0]
        train_err = (data["train_background"] - data["train_truth"]).double().reshape(samples, -1)
        b_matrix = fit_background_covariance(train_err.numpy(), shrinkage=0.1)
        for factor in (0.5, 1.0, 2.0):
            t0 = time.perf_counter()
            analyses, bgs = cycle_var3d(model, data, cases, b_matrix, factor)
            report(f"var3d_{factor}", f"3D-Var (static B x {factor})", analyses, bgs, time.perf_counter() - t0)
        letkf_rows()
    da = AssimilationModel.load(work / "model")
    for key in [m for m in methods if m.partition("@")[0].removesuffix("+clip") in VARIANTS
                or m.startswith(("dpo", "reward_"))]:  # fmt: skip
        # "<method>@<offset>": the same method with other sampling seeds; "<method>+clip": with clipped latents
        clipped = "+clip" in key
        base, _, offset = key.replace("+clip", "").partition("@")
        if offset and base in VARIANTS:
            name, options = VARIANTS[base][0] + f", seeds +{offset}", dict(VARIANTS[base][1], seed_offset=int(offset))
        elif offset:
            name, options = dpo_name(work, base[3:]), dict(VARIANTS["dpo"][1], seed_offset=int(offset))
            name = f"{name}, seeds +{offset}"
            options["denoiser"] = Denoiser.from_pretrained(work / f"aligned{base[3:]}")
        elif base in VARIANTS:
            name, options = VARIANTS[base]
        elif base.startswith("dpo"):
            name, options = dpo_name(work, base[3:]), VARIANTS["dpo"][1]
        else:
            scale_r = float(base.split("_")[1])
            name = f"latent diffusion, MMPS + forecast-skill guidance (x0, {scale_r:g})"
            options = dict(guidance="mmps", reward_scale=scale_r)
        options = dict(options)
        if base.startswith("dpo") and not offset:
            options["denoiser"] = Denoiser.from_pretrained(work / f"aligned{base[3:]}")
        if clipped:
            name, options["clip_latent"] = f"{name}, latents clipped to +-{LATENT_CLIP:g}", LATENT_CLIP
        reward_name = "forecast_skill" if key.startswith("reward") else None
        members, bgs, seconds = cycle_samples(model, da, data, cases, cfg, reward_name, **options)
        report(key, name, members.mean(1), bgs, seconds)
        scores = [case.scores(members[t]) for t, case in enumerate(cases)]
        results["rewards"][key] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        path.write_text(json.dumps(results, indent=1))
    # the public cycling driver on the same problem (xarray in and out), for the MMPS model
    if "cycle_api" in methods:
        times = times_of(n, "2001-01-01", 24)
        members, bgs, seconds = cycle_diffusion(model, da, data, cases, cfg, times, guidance="mmps")
        report("cycle_api", "latent diffusion, MMPS via geodiff.pipelines.assimilate.cycle", members.mean(1), bgs,
               seconds)  # fmt: skip


def stage_table(work: Path, cfg: dict) -> None:
    results = {"rows": {}, "rewards": {}}
    for path in sorted(work.glob("results*.json")):  # several evaluate runs may have written their own file
        part = json.loads(path.read_text())
        results["rows"].update(part["rows"])
        results["rewards"].update(part["rewards"])
    print("\n## Cycling twin experiment (barotropic beta plane 32x32, 24 h cycles, "
          f"{cfg['cycles']} cycles, {cfg['sites']} sites x (z, u, v))\n")
    print("RMSE / climatological std, mean over z, u, v and cycles (per-variable analysis RMSE in m, m/s, m/s).\n")
    print("| method | background | analysis | analysis z / u / v | 24 h forecast from analysis | "
          "from background | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"].values():
        by = " / ".join(f"{v:.2f}" for v in r["by_variable"])
        print(f"| {r['method']} | {r['background']:.3f} | {r['analysis']:.3f} | {by} | "
              f"{r['forecast_from_analysis']:.3f} | {r['forecast_from_background']:.3f} | {r['seconds']:.0f} |")
    rewards = results["rewards"]
    if not rewards:
        return
    groups: dict[str, list[str]] = {}
    for key in rewards:  # "<method>@<offset>" repeats <method> with other seeds ("mmps_seed1" = "mmps@1000")
        base = "mmps" if key == "mmps_seed1" else key.partition("@")[0]
        groups.setdefault(base, []).append(key)
    groups = {base: keys for base, keys in groups.items() if len(keys) > 1 and base in rewards}
    if groups:
        print("\n## Cycling over several seed sets (mean +- s.e. over seed sets)\n")
        columns = ["analysis", "forecast_from_analysis"]
        names = list(next(iter(rewards.values())))
        print("| method | seed sets | " + " | ".join(columns + names) + " |")
        print("|---|---|" + "---|" * (len(columns) + len(names)))
        for base, keys in groups.items():
            values = [[results["rows"][k][c] for k in keys] for c in columns]
            values += [[rewards[k][n] for k in keys] for n in names]
            cells = [f"{np.mean(v):.4f} +- {np.std(v, ddof=1) / math.sqrt(len(v)):.4f}" for v in values]
            print(f"| {results['rows'][base]['method']} | {len(keys)} | " + " | ".join(cells) + " |")
        if "mmps" in groups:  # paired by seed set: the same sampling seeds for both models
            offset = lambda k: 1000 if k == "mmps_seed1" else int(k.partition("@")[2] or 0)  # noqa: E731
            print("\nPaired by seed set, change vs the reference (%, positive = better, mean +- s.e. over seed sets; "
                  "methods with clipped latents against MMPS with clipped latents):\n")
            print("| method | vs | seed sets | analysis RMSE | " + " | ".join(names) + " |")
            print("|---|---|---|" + "---|" * (len(names) + 1))
            for base, keys in groups.items():
                ref = "mmps_clip" if base.endswith("+clip") and "mmps_clip" in groups else "mmps"
                base_by = {offset(k): k for k in groups[ref]}
                common = [(base_by[offset(k)], k) for k in keys if offset(k) in base_by and base not in ("mmps", ref)]
                if len(common) < 2:
                    continue
                cells = []
                for column in ["analysis", *names]:
                    if column == "analysis":
                        change = [100 * (results["rows"][m][column] - results["rows"][k][column])
                                  / results["rows"][m][column] for m, k in common]  # fmt: skip
                    else:
                        change = [100 * (rewards[k][column] - rewards[m][column]) / abs(rewards[m][column])
                                  for m, k in common]  # fmt: skip
                    cells.append(f"{np.mean(change):+.1f} +- {np.std(change, ddof=1) / math.sqrt(len(change)):.1f}")
                print(f"| {results['rows'][base]['method']} | {ref} | {len(common)} | " + " | ".join(cells) + " |")
    print("\n## Rewards of the analysis members (higher is better; mean over members and cycles)\n")
    names = list(next(iter(rewards.values())))
    reference = rewards.get("mmps")
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, values in rewards.items():
        cells = []
        for k in names:
            change = "" if reference is None or key == "mmps" else \
                f" ({100 * (values[k] - reference[k]) / abs(reference[k]):+.1f} %)"
            cells.append(f"{values[k]:.4f}{change}")
        print(f"| {results['rows'][key]['method']} | " + " | ".join(cells) + " |")


def cycle_samples(model, da, data, cases, cfg, reward_name, *, guidance, reward_scale=0.0, denoiser=None,
                  guidance_options=None, members=None, seed_offset=0, clip_latent=None):  # fmt: skip
    """Cycle with :func:`sample_analysis` (tensors); the same seeds for every variant."""
    background = data["first_background"][0].float()
    members_all, bgs = [], []
    t0 = time.perf_counter()
    for t, case in enumerate(cases):
        generator = torch.Generator().manual_seed(10_000 + seed_offset + t)
        reward = case.rewards[reward_name] if reward_name else None
        states, _ = sample_analysis(da, background, operator=case.operator, y=case.y, error_std=case.error_std,
                                    members=members or cfg["members"], steps=cfg["steps"], guidance=guidance,
                                    guidance_options=guidance_options, denoiser=denoiser,
                                    reward=None if reward is None else (lambda x, r=reward: r(x.double()).float()),
                                    reward_scale=reward_scale, generator=generator,
                                    clip_latent=clip_latent)  # fmt: skip
        members_all.append(states.double())
        bgs.append(background.double())
        background = model.forecast(states.double().mean(0, keepdim=True), DAY)[0].float()
    return torch.stack(members_all), torch.stack(bgs), time.perf_counter() - t0


def parse_weights(text: str) -> dict[str, float]:
    weights = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in REWARDS:
            raise SystemExit(f"--weights: unknown reward {name!r}; expected one of {REWARDS}")
        weights[name] = float(value)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["data", "train", "align", "align-eval", "evaluate", "table"])
    parser.add_argument("--methods", default="baselines,dps,dps_chung,mmps,dpo,reward_1,reward_10,cycle_api",
                        help="evaluate: comma-separated subset (results accumulate in results.json)")
    parser.add_argument("--workdir", default="assimilation-benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", default="results.json", help="evaluate: file (in workdir) to add results to")
    parser.add_argument("--dpo-lr", type=float, default=2e-5)
    parser.add_argument("--dpo-beta", type=float, default=2000.0)
    parser.add_argument("--dpo-steps", type=int, default=None)
    parser.add_argument("--tag", default="", help="align: suffix of the saved policy (evaluate it as dpo<tag>)")
    parser.add_argument("--pairs", type=int, default=None, help="align: number of training cases to sample")
    parser.add_argument("--pair-members", type=int, default=None, help="align: samples per training case")
    parser.add_argument("--weights", default="forecast_skill=1",
                        help="align: ranking = weighted sum of per-case standardised rewards, e.g. "
                             "forecast_skill=1,geostrophic_balance=0.3")
    parser.add_argument("--pairs-per-case", type=int, default=1, help="align: (k-th best, k-th worst), k = 1..")
    parser.add_argument("--keep", type=float, default=1.0, help="align: fraction of cases with the largest gap")
    parser.add_argument("--holdout", type=float, default=0.0, help="align: fraction of cases for early stopping")
    parser.add_argument("--eval-every", type=int, default=10, help="align: validation interval (steps)")
    parser.add_argument("--sft-weight", type=float, default=0.0, help="align: weight of the denoising loss on winners")
    parser.add_argument("--aligned-reward", default="forecast_skill", choices=REWARDS,
                        help="align-eval: the reward the policies were aligned to (the bar column)")
    parser.add_argument("--clip", action="store_true",
                        help=f"align: sample the training analyses with latents clipped to +-{LATENT_CLIP:g}")
    parser.add_argument("--tags", default="", help="align-eval: comma-separated aligned policies (tags); "
                        "\"clip\" = the unaligned model with clipped latents, \"<tag>+clip\" an aligned one")
    parser.add_argument("--eval-cases", type=int, default=None)
    parser.add_argument("--eval-members", type=int, default=None)
    parser.add_argument("--eval-start", type=int, default=None,
                        help="align-eval: first test day minus 1 (another case set, e.g. to confirm a choice)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = settings(args.quick)
    for name in ("pairs", "pair_members", "dpo_steps", "eval_cases", "eval_members", "eval_start"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    if args.clip:
        cfg["clip_latent"] = LATENT_CLIP
    if args.stage == "evaluate":
        stage_evaluate(work, cfg, args.methods.split(","), args.results)
    elif args.stage == "align":
        stage_align(work, cfg, lr=args.dpo_lr, beta=args.dpo_beta, tag=args.tag, weights=parse_weights(args.weights),
                    per_case=args.pairs_per_case, keep=args.keep, holdout=args.holdout, sft_weight=args.sft_weight,
                    eval_every=args.eval_every)  # fmt: skip
    elif args.stage == "align-eval":
        stage_align_eval(work, cfg, [t for t in args.tags.split(",") if t], args.aligned_reward)
    else:
        {"data": stage_data, "train": stage_train, "table": stage_table}[args.stage](work, cfg)


if __name__ == "__main__":
    main()
