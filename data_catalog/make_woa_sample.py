"""Make the shipped World Ocean Atlas sample ``geodiff/data/woa_monthly_temperature.nc`` and its manifest entry.

Source: Debian package ``ferret-datasets`` 7.6.0-5 (``usr/share/ferret-vis/data/ocean_atlas_subset.nc``).
From scratch, in an empty folder::

    apt-get download ferret-datasets=7.6.0-5      # ferret-datasets_7.6.0-5_all.deb, sha256 below
    dpkg -x ferret-datasets_7.6.0-5_all.deb x
    python data_catalog/make_woa_sample.py --source x/usr/share/ferret-vis/data/ocean_atlas_subset.nc \\
        --deb ferret-datasets_7.6.0-5_all.deb

(``--fetch DIR`` runs the two first commands itself.) The conversion is
:func:`geodiff.adapters.woa.open_ferret_woa` (roll longitudes to [-180, 180), latitude ascending, climatological
months -> mid-months of the placeholder year 2000, degC, NaN on land, ``sea_mask``). The file is then packed to
int16 (``scale_factor`` 0.005 degC, ``add_offset`` 15 degC; the measured maximum absolute error is written to the
variable's attributes and to the manifest) and compressed with zlib, one chunk per depth level. The output is
byte-for-byte reproducible (no timestamps are written). The script updates ``data_catalog/samples.yaml`` (entry
``woa_monthly_temperature`` only) and its packaged copy ``geodiff/data/samples.yaml``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from geodiff.adapters.woa import SAMPLE_NAME, VARIABLE, WOA_LICENCE, open_ferret_woa
from geodiff.tutorial import file_sha256

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "geodiff" / "data" / f"{SAMPLE_NAME}.nc"
MANIFEST = ROOT / "data_catalog" / "samples.yaml"
PACKAGED_MANIFEST = ROOT / "geodiff" / "data" / "samples.yaml"

PACKAGE = "ferret-datasets"
PACKAGE_VERSION = "7.6.0-5"
PACKAGE_DEB = f"{PACKAGE}_{PACKAGE_VERSION}_all.deb"
PACKAGE_SHA256 = "e5770222647ebfe2ab77b845e07a7e05cb6fed7b12dec9ae287a1f8046031744"
SOURCE_PATH_IN_PACKAGE = "usr/share/ferret-vis/data/ocean_atlas_subset.nc"
SOURCE_SHA256 = "598e82c3689272fdd1eff7a9e9d5706f4c08b5841dc028fbbc5c49374c81c8ff"

SCALE_FACTOR = np.float32(0.005)
ADD_OFFSET = np.float32(15.0)
FILL = np.int16(-32768)

HEADER = """\
# geodiff sample-data manifest: every file shipped in geodiff/data/, with provenance, licence and sha256.
# geodiff.tutorial.open_dataset(name) refuses a file whose sha256 differs from its entry here.
# Entries are written by the scripts named in `made_by`; geodiff/data/samples.yaml is an identical copy
# shipped inside the package.
"""


def fetch(folder: Path) -> tuple[Path, Path]:
    """``apt-get download`` the package into ``folder`` and ``dpkg -x`` it; returns (source file, .deb)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", f"{PACKAGE}={PACKAGE_VERSION}"], cwd=folder, check=True)
    deb = folder / PACKAGE_DEB
    subprocess.run(["dpkg", "-x", str(deb), str(folder / "x")], check=True)
    return folder / "x" / SOURCE_PATH_IN_PACKAGE, deb


def pack(ds: xr.Dataset, path: Path) -> float:
    """Write ``ds`` packed to int16 with zlib; returns the measured maximum absolute packing error (degC)."""
    values = ds[VARIABLE].values
    packed = np.where(np.isfinite(values), np.round((values - ADD_OFFSET) / SCALE_FACTOR), FILL).astype(np.int16)
    unpacked = np.where(packed == FILL, np.nan, packed.astype(np.float32) * SCALE_FACTOR + ADD_OFFSET)
    max_error = float(np.nanmax(np.abs(unpacked.astype(np.float64) - values.astype(np.float64))))
    out = ds.copy()
    out[VARIABLE].attrs = {
        **ds[VARIABLE].attrs,
        "packing": (
            f"stored as int16 with scale_factor {float(SCALE_FACTOR):g} degC and add_offset "
            f"{float(ADD_OFFSET):g} degC; "
            f"maximum absolute difference from the source values {max_error:.6f} degC (measured)"
        ),
        "packing_max_abs_error": np.float32(round(max_error, 6)),
    }
    step = (f"data_catalog/make_woa_sample.py: packed {VARIABLE} to int16 (scale_factor {float(SCALE_FACTOR):g}, "
            f"add_offset {float(ADD_OFFSET):g}, max abs error {max_error:.6f} degC), zlib level 9")
    out.attrs = {
        **ds.attrs,
        "source_package": f"Debian {PACKAGE} {PACKAGE_VERSION} ({PACKAGE_DEB}, sha256 {PACKAGE_SHA256}), "
                          f"file {SOURCE_PATH_IN_PACKAGE}",
        "history": f"{ds.attrs['history']}\n{step}",
    }
    encoding = {
        VARIABLE: {"dtype": "int16", "scale_factor": SCALE_FACTOR, "add_offset": ADD_OFFSET, "_FillValue": FILL,
                   "zlib": True, "complevel": 9, "shuffle": True,
                   "chunksizes": (ds.sizes["time"], 1, ds.sizes["lat"], ds.sizes["lon"])},
        "sea_mask": {"zlib": True, "complevel": 9},
        "time": {"units": "days since 2000-01-01 00:00:00", "calendar": "proleptic_gregorian", "dtype": "float64"},
        "depth": {"_FillValue": None}, "lat": {"_FillValue": None}, "lon": {"_FillValue": None},
    }
    tmp = path.with_suffix(".tmp.nc")
    out.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    tmp.replace(path)
    return max_error


def manifest_entry(ds: xr.Dataset, path: Path, max_error: float, source: Path, deb_sha256: str | None) -> dict:
    temp = ds[VARIABLE]
    return {
        "file": path.name,
        "sha256": file_sha256(path),
        "size_bytes": path.stat().st_size,
        "made_by": "data_catalog/make_woa_sample.py",
        "opened_by": "geodiff.tutorial.open_dataset",
        "title": ds.attrs["title"],
        "variable": VARIABLE,
        "standard_name": temp.attrs["standard_name"],
        "units": temp.attrs["units"],
        "dims": {name: int(size) for name, size in ds[VARIABLE].sizes.items()},
        "depth_m": [float(d) for d in ds.depth.values],
        "grid": {"lat": "-89.5..88.5 ascending, 2 degree", "lon": "-179.5..178.5, convention [-180, 180), 2 degree"},
        "time": ds.attrs["time_note"],
        "land": "NaN, plus coordinate sea_mask(depth, lat, lon)",
        "ocean_cells_per_level": [int(n) for n in ds.sea_mask.sum(("lat", "lon")).values],
        "packing": {
            "dtype": "int16",
            "scale_factor_degC": round(float(SCALE_FACTOR), 6),
            "add_offset_degC": float(ADD_OFFSET),
            "max_abs_error_degC": round(max_error, 6),
            "compression": "zlib level 9 with shuffle, one chunk per depth level",
        },
        "source": {
            "product": ds.attrs["source"],
            "references": ds.attrs["references"],
            "file": source.name,
            "file_sha256": file_sha256(source),
            "package": PACKAGE,
            "package_version": PACKAGE_VERSION,
            "package_file": PACKAGE_DEB,
            "package_sha256": deb_sha256 or PACKAGE_SHA256,
            "path_in_package": SOURCE_PATH_IN_PACKAGE,
            "how_to_get": f"apt-get download {PACKAGE}={PACKAGE_VERSION} && dpkg -x {PACKAGE_DEB} x",
        },
        "licence": WOA_LICENCE,
    }


def write_manifest(name: str, entry: dict) -> None:
    content = {"samples": {}}
    if MANIFEST.is_file():
        content = yaml.safe_load(MANIFEST.read_text(encoding="utf-8")) or {"samples": {}}
    content.setdefault("samples", {})[name] = entry
    text = HEADER + yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=110)
    MANIFEST.write_text(text, encoding="utf-8")
    PACKAGED_MANIFEST.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="path of ocean_atlas_subset.nc from ferret-datasets")
    parser.add_argument("--deb", type=Path, help="the .deb it came from (its sha256 is checked)")
    parser.add_argument("--fetch", type=Path, metavar="DIR", help="apt-get download + dpkg -x into DIR first")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="output netCDF (default: geodiff/data/...)")
    parser.add_argument("--no-manifest", action="store_true", help="do not update the manifests")
    args = parser.parse_args(argv)

    if args.fetch is not None:
        args.source, args.deb = fetch(args.fetch)
    if args.source is None:
        default = Path("/usr/share/ferret-vis/data/ocean_atlas_subset.nc")
        if not default.is_file():
            parser.error("give --source, or --fetch DIR to download the package")
        args.source = default
    deb_sha = None
    if args.deb is not None:
        deb_sha = file_sha256(args.deb)
        if deb_sha != PACKAGE_SHA256:
            print(f"error: {args.deb} has sha256 {deb_sha}, expected {PACKAGE_SHA256}", file=sys.stderr)
            return 1
    source_sha = file_sha256(args.source)
    if source_sha != SOURCE_SHA256:
        print(f"error: {args.source} has sha256 {source_sha}, expected {SOURCE_SHA256}", file=sys.stderr)
        return 1

    ds = open_ferret_woa(args.source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / args.output.name
        max_error = pack(ds, staged)
        shutil.copyfile(staged, args.output)
    if not args.no_manifest:
        write_manifest(SAMPLE_NAME, manifest_entry(ds, args.output, max_error, args.source, deb_sha))
    size = args.output.stat().st_size
    print(f"{args.output}: {size / 1e6:.3f} MB, sha256 {file_sha256(args.output)}, max packing error "
          f"{max_error:.6f} degC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
