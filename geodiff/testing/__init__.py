"""Test support for geodiff and its plugins (like ``xarray.testing``); nothing here is used by the library itself.

=================  ==============================================================================================
module             what
=================  ==============================================================================================
``products``       format-faithful synthetic files of every product the adapters read (CMIP6, EN4, ERA5,
                   GridSat, sounders, GEBCO, stations), with the smooth analytic truth they were written from
``datasets``       tiny canonical datasets (a synthetic ocean with land cells)
``backbones``      :class:`~geodiff.testing.backbones.BackboneContract`, the backbone contract as a pytest test
                   class that a backbone plugin subclasses (needs pytest)
=================  ==============================================================================================

Example
-------
>>> import tempfile
>>> from geodiff.testing import products
>>> products.write_stations_csv(tempfile.mkdtemp() + "/stations.csv").suffix
'.csv'
"""
