"""Step results as typed JSON records: round trips, and hostile or broken records are misses
that are never loaded as code."""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from ecocompress.flows import records
from ecocompress.flows.steps import RESULT_KEYS, carbon_step, measure_step, prune_step, return_type
from ecocompress.tasks.artifacts import ModelRef, sha256_text

KEY = sha256_text("a key")
REF = ModelRef(
    id="abc",
    path="/m",
    content_hash="c" * 64,
    model_name="tiny",
    source="local",
    reference_weight_bytes=10,
    achieved_sparsity=0.5,
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class PlantedCode:
    """Unpickling this creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def prefect_pickle_record(marker: Path) -> bytes:
    """A Prefect 3 result record whose metadata asks for the pickle serializer."""
    blob = base64.encodebytes(pickle.dumps(PlantedCode(marker))).decode()
    meta = {"storage_key": "k", "serializer": {"type": "pickle", "picklelib": "pickle"}}
    return json.dumps({"metadata": meta, "result": blob}).encode()


def test_every_cached_step_has_a_json_return_type():
    assert set(RESULT_KEYS) == {"prune", "quantize", "measure", "evaluate", "carbon"}
    assert return_type(prune_step) is ModelRef
    assert return_type(measure_step) == dict[str, Any]
    assert return_type(carbon_step) == float | None


@pytest.mark.parametrize(
    "value, rtype",
    [
        (REF, ModelRef),
        ({"a": math.inf, "b": None, "c": {"d": [1, "x"]}}, dict[str, Any]),
        (0.25, float | None),
        (None, float | None),
    ],
)
def test_round_trip_keeps_type_and_value(home, value, rtype):
    records.save("s", KEY, value, rtype)
    hit, back = records.load("s", KEY, rtype)
    assert hit and back == value and type(back) is type(value)


def test_nan_stays_nan(home):
    records.save("measure", KEY, {"x": math.nan}, dict[str, Any])
    assert math.isnan(records.load("measure", KEY, dict[str, Any])[1]["x"])


def test_a_value_that_is_not_json_is_a_programmer_error(home):
    with pytest.raises(TypeError, match="step s returned a value that does not round-trip"):
        records.save("s", KEY, {"x": object()}, dict[str, Any])
    with pytest.raises(TypeError):
        records.save("s", KEY, "not a ref", ModelRef)


def test_a_planted_pickle_is_never_loaded(home, tmp_path, capsys):
    marker = tmp_path / "UNPICKLED"
    path = records.record_path(KEY)
    for planted in (prefect_pickle_record(marker), pickle.dumps(PlantedCode(marker))):
        path.write_bytes(planted)
        assert records.load("prune", KEY, ModelRef) == (False, None)
        assert not marker.exists() and not path.exists()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(
        e.startswith(f"ecocompress: warning: cached prune result {KEY}.json is unreadable")
        and e.endswith("removed, recomputing it")
        for e in err
    )


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda t: t[: len(t) // 2],  # truncated
        lambda t: t.replace('"path": "/m"', '"path": 7'),  # a ModelRef field of the wrong type
        lambda t: t.replace('"step": "prune"', '"step": "carbon"'),  # another step's record
        lambda t: t.replace('"format": "ecocompress-step-result/1"', '"format": "x"'),
        lambda t: "\xff" + t,  # not UTF-8
        lambda t: "[" * 100_000 + "]" * 100_000,  # nested too deep for the parser
    ],
)
def test_a_corrupt_record_is_a_miss_and_removed(home, capsys, corrupt):
    records.save("prune", KEY, REF, ModelRef)
    path = records.record_path(KEY)
    path.write_bytes(corrupt(path.read_text()).encode("latin-1"))
    assert records.load("prune", KEY, ModelRef) == (False, None)
    assert not path.exists() and "recomputing it" in capsys.readouterr().err


def test_save_is_atomic_and_leaves_no_temporary_file(home):
    records.save("carbon", KEY, 1.5, float | None)
    assert sorted(os.listdir(records.records_dir())) == [f"{KEY}.json"]


def test_keys_are_sha256_digests(home):
    with pytest.raises(ValueError, match="not a sha256 hex digest"):
        records.record_path("../../etc/passwd")
