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
    python benchmarks/assimilation.py align      # Diffusion-DPO (--dpo-lr, --dpo-beta, --tag)
    python benchmarks/assimilation.py evaluate   # cycling; --methods subset, --results file (they accumulate)
    python benchmarks/assimilation.py table      # Markdown tables of every results*.json in --workdir

``--methods`` names: ``baselines``, ``letkf``, ``dps``, ``dps_chung``, ``mmps``, ``mmps16``, ``mmps_cg2``,
``mmps_seed1``, ``dpo<tag>``, ``dpo<tag>@<seed offset>``, ``reward_<scale>``, ``cycle_api``.
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
                    prior_steps=50, pairs=8, pair_members=4, dpo_steps=10, etkf_members=10)
    return dict(train_times=1200, cycles=15, sites=64, heldout_sites=32, members=6, steps=10, ae_steps=600,
                prior_steps=1500, pairs=48, pair_members=6, dpo_steps=150, etkf_members=20)


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


def stage_align(work: Path, cfg: dict, lr: float = 2e-5, beta: float = 2000.0, tag: str = "") -> None:
    data, model = load_data(work), twin_model()
    da = AssimilationModel.load(work / "model")
    pairs_file = work / "pairs.safetensors"
    if pairs_file.exists():  # the sampled pairs are reused by every fine-tuning setting
        pairs = load_file(str(pairs_file))
        print(f"align: reusing {pairs['winners'].shape[0]} pairs from {pairs_file}")
    else:
        slope = slope_of_training(model, data)
        truth, background = data["train_truth"], data["train_background"]
        # cases: training times with a truth 24 h later (index + 2 at 12 h spacing); none from the test window
        index = torch.randperm(truth.shape[0] - 2, generator=torch.Generator().manual_seed(5))[: cfg["pairs"]]
        winners, losers, conds, gaps = [], [], [], []
        t0 = time.perf_counter()
        for k, i in enumerate(index.tolist()):
            case = Case(model, data, cfg, truth[i], truth[i + 2], seed=1000 + k, slope_target=slope)
            generator = torch.Generator().manual_seed(2000 + k)
            states, latents = sample_analysis(da, background[i].float(), operator=case.operator, y=case.y,
                                              error_std=case.error_std, members=cfg["pair_members"],
                                              steps=cfg["steps"], generator=generator)  # fmt: skip
            with torch.no_grad():
                reward = case.rewards["forecast_skill"](states.double())
            winners.append(latents[reward.argmax()])
            losers.append(latents[reward.argmin()])
            conds.append(da.encode(background[i][None].float())[0])
            gaps.append(float(reward.max() - reward.min()))
        pairs = {"winners": torch.stack(winners).contiguous(), "losers": torch.stack(losers).contiguous(),
                 "conds": torch.stack(conds).contiguous(), "gaps": torch.tensor(gaps)}  # fmt: skip
        save_file(pairs, str(pairs_file))
        print(f"align: {len(index)} pairs from {cfg['pair_members']} samples each ({time.perf_counter() - t0:.0f} s), "
              f"mean reward gap {np.mean(gaps):.3f}")
    policy = copy.deepcopy(da.denoiser)
    result = dpo_finetune(policy, pairs["winners"], pairs["losers"], cond={"concat": pairs["conds"]},
                          steps=cfg["dpo_steps"], batch_size=16, beta=beta, lr=lr, seed=0, progress=False)  # fmt: skip
    policy.save_pretrained(work / f"aligned{tag}")
    print(f"DPO lr {lr} beta {beta}: {cfg['dpo_steps']} steps ({result.seconds:.0f} s), loss first 10 "
          f"{np.mean(result.losses[:10]):.4f} -> last 10 {np.mean(result.losses[-10:]):.4f}")


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
    "reward_1": ("latent diffusion, MMPS + forecast-skill guidance (x0, 1)", dict(guidance="mmps", reward_scale=1.0)),
    "reward_10": ("latent diffusion, MMPS + forecast-skill guidance (x0, 10)",
                  dict(guidance="mmps", reward_scale=10.0)),
}


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
    for key in [m for m in methods if m in VARIANTS or m.startswith(("dpo", "reward_"))]:
        # "<method>@<offset>": the same method with other sampling seeds
        base, _, offset = key.partition("@")
        if offset:
            name, options = VARIANTS["dpo"][0] + f" [{base[3:]}]", dict(VARIANTS["dpo"][1], seed_offset=int(offset))
            name = f"{name}, other seeds"
            options["denoiser"] = Denoiser.from_pretrained(work / f"aligned{base[3:]}")
        elif key in VARIANTS:
            name, options = VARIANTS[key]
        elif key.startswith("dpo"):
            name, options = f"{VARIANTS['dpo'][0]} [{key[3:]}]", VARIANTS["dpo"][1]
        else:
            scale_r = float(key.split("_")[1])
            name = f"latent diffusion, MMPS + forecast-skill guidance (x0, {scale_r:g})"
            options = dict(guidance="mmps", reward_scale=scale_r)
        options = dict(options)
        if key.startswith("dpo") and not offset:
            options["denoiser"] = Denoiser.from_pretrained(work / f"aligned{key[3:]}")
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
                  guidance_options=None, members=None, seed_offset=0):  # fmt: skip
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
                                    reward_scale=reward_scale, generator=generator)  # fmt: skip
        members_all.append(states.double())
        bgs.append(background.double())
        background = model.forecast(states.double().mean(0, keepdim=True), DAY)[0].float()
    return torch.stack(members_all), torch.stack(bgs), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["data", "train", "align", "evaluate", "table", "real"])
    parser.add_argument("--methods", default="baselines,dps,dps_chung,mmps,dpo,reward_1,reward_10,cycle_api",
                        help="evaluate: comma-separated subset (results accumulate in results.json)")
    parser.add_argument("--workdir", default="assimilation-benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", default="results.json", help="evaluate: file (in workdir) to add results to")
    parser.add_argument("--dpo-lr", type=float, default=2e-5)
    parser.add_argument("--dpo-beta", type=float, default=2000.0)
    parser.add_argument("--tag", default="", help="align: suffix of the saved policy (evaluate it as dpo<tag>)")
    parser.add_argument("--pairs", type=int, default=None, help="align: number of preference pairs to sample")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = settings(args.quick)
    if args.pairs is not None:
        cfg["pairs"] = args.pairs
    if args.stage == "evaluate":
        stage_evaluate(work, cfg, args.methods.split(","), args.results)
    elif args.stage == "align":
        stage_align(work, cfg, lr=args.dpo_lr, beta=args.dpo_beta, tag=args.tag)
    else:
        {"data": stage_data, "train": stage_train, "table": stage_table,
         "real": stage_real}[args.stage](work, cfg)  # fmt: skip


def stage_real(work: Path, cfg: dict) -> None:
    raise SystemExit("the real-field variant is described in benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
