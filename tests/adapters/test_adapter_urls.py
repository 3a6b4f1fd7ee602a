"""The product adapters read files behind URLs (fsspec) exactly as local files."""

from __future__ import annotations

import warnings
from pathlib import Path

import fsspec
import pytest
import xarray as xr

from geodiff.adapters import en4, era5
from geodiff.errors import DataError
from geodiff.testing import products


def _upload(files: list[Path], folder: str) -> list[str]:
    urls = []
    for path in files:
        url = f"{folder}/{path.name}"
        with fsspec.open(url, "wb") as fh:
            fh.write(path.read_bytes())
        urls.append(url)
    return urls


def test_en4_analysis_behind_a_url_equals_the_local_file(tmp_path):
    path = products.write_en4_analysis(tmp_path)
    (url,) = _upload([path], "memory://adapters/en4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the product's valid_max on kelvin data is reported
        local, remote = en4.open_analysis(path), en4.open_analysis(url)
    xr.testing.assert_identical(local.drop_attrs(deep=False), remote.drop_attrs(deep=False))
    assert remote.attrs["geodiff_source_files"] == local.attrs["geodiff_source_files"]  # the file keeps its name


def test_era5_folder_behind_a_url_equals_the_local_folder(tmp_path):
    files = products.write_era5(tmp_path, kind="single")
    _upload(files, "memory://adapters/era5")
    local, remote = era5.open_dataset(tmp_path), era5.open_dataset("memory://adapters/era5")
    xr.testing.assert_identical(local.drop_attrs(deep=False), remote.drop_attrs(deep=False))


def test_a_missing_url_is_named():
    with pytest.raises(DataError, match="memory://adapters/none.nc"):
        en4.open_analysis("memory://adapters/none.nc")
