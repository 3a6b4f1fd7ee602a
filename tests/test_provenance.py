"""geodiff.provenance: history lines are stamped and appended, provenance attributes are plain."""

import json
import re

import geodiff
from geodiff.provenance import append_history, provenance_attrs, utc_stamp

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_history_is_appended_with_a_utc_stamp_and_never_overwritten():
    first = append_history({"title": "t"}, "step one")
    assert re.fullmatch(f"{STAMP} step one", first["history"]) and first["title"] == "t"
    second = append_history(first, "step two")
    lines = second["history"].splitlines()
    assert lines[0] == first["history"] and re.fullmatch(f"{STAMP} step two", lines[1])
    assert "history" not in {"title": "t"} and first is not second  # a copy: the input is untouched
    assert append_history({"history": ""}, "x")["history"].endswith("Z x")
    assert re.fullmatch(STAMP, utc_stamp())


def test_provenance_attributes_are_netcdf_writable():
    attrs = provenance_attrs(seed=3, model_sha256="ab", guidance={"method": "mmps", "steps": 5}, flag=True)
    assert attrs["geodiff_version"] == geodiff.__version__
    assert attrs["geodiff_seed"] == 3 and attrs["geodiff_model_sha256"] == "ab"
    assert json.loads(attrs["geodiff_guidance"]) == {"method": "mmps", "steps": 5}
    assert attrs["geodiff_flag"] == "true"
