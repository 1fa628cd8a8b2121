"""Store API over a local directory (S3 is in tests/integration with moto)."""

import os

import pytest

from mycelium.core.errors import MissingKeyError, StoreError
from mycelium.core.store import LocalStore, S3Store, open_store


def test_roundtrip_list_exists(tmp_path):
    s = LocalStore(tmp_path)
    s.put("r/chunks/b.npz", b"\x00\x01")
    s.put_json("r/chunks/a.json", {"k": [1, 2]})
    s.put("r/traces/a.json", b"{}")
    assert s.get("r/chunks/b.npz") == b"\x00\x01"
    assert s.get_json("r/chunks/a.json") == {"k": [1, 2]}
    assert s.exists("r/chunks/a.json") and not s.exists("r/chunks/zzz")
    assert list(s.list("r/chunks/")) == ["r/chunks/a.json", "r/chunks/b.npz"]
    assert list(s.list("r/chunks/a")) == ["r/chunks/a.json"]
    assert list(s.list("nothing/")) == []


def test_missing_key_and_bad_keys(tmp_path):
    s = LocalStore(tmp_path)
    with pytest.raises(MissingKeyError, match="r/x: no such key"):
        s.get("r/x")
    for bad in ["", "/abs", "a/../b", "a//b"]:
        with pytest.raises(StoreError):
            s.put(bad, b"")


def test_put_is_atomic_and_leaves_no_temp_files(tmp_path):
    s = LocalStore(tmp_path)
    s.put("k/v", b"old")

    with pytest.raises(TypeError):
        s.put("k/v", object())  # fails mid-write
    assert s.get("k/v") == b"old"
    assert os.listdir(tmp_path / "k") == ["v"]


def test_invalid_json_names_the_key(tmp_path):
    s = LocalStore(tmp_path)
    s.put("r/x.json", b"{nope")
    with pytest.raises(StoreError, match="r/x.json: not valid JSON"):
        s.get_json("r/x.json")


def test_open_store_by_url(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(f"file://{tmp_path}").root == tmp_path.resolve()
    s3 = open_store("s3://bucket/some/prefix")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    with pytest.raises(StoreError, match="unsupported"):
        open_store("gs://x/y")
    with pytest.raises(StoreError, match="needs a bucket"):
        open_store("s3:///prefix")
    with pytest.raises(StoreError, match="three slashes"):
        open_store("file://runs")


def test_prefixes_are_string_prefixes_like_s3(tmp_path):
    s = LocalStore(tmp_path)
    for k in ["run/p1/x.json", "run/p1x.json", "run/p2.json", "run2/a.json"]:
        s.put(k, b"")
    assert list(s.list("run/p1")) == ["run/p1/x.json", "run/p1x.json"]
    assert list(s.list("run")) == ["run/p1/x.json", "run/p1x.json", "run/p2.json", "run2/a.json"]
    assert list(s.list("run/")) == ["run/p1/x.json", "run/p1x.json", "run/p2.json"]
    s.delete("run/p2.json")
    s.delete("run/never-there")
    assert not s.exists("run/p2.json")


def test_jsonl_records_may_hold_unicode_line_breaks():
    """A problem's text with U+2028 (GSM8K has one) stays one record: lines end at \\n only."""
    import json

    from mycelium.core.store import jsonl
    from mycelium.records.problems import Problem, Source

    p = Problem(id="p000000000001", question="Line one\u2028line two\x85and three?", answer="1",
                source=Source(file="f.jsonl", line=1, dataset="plain"))
    data = (p.model_dump_json() + "\n" + json.dumps({"x": 1}) + "\n").encode()
    assert "\u2028" in data.decode() and len(data.decode().splitlines()) > 2  # the trap
    (a, b) = jsonl(data)
    assert Problem.model_validate_json(a) == p and json.loads(b) == {"x": 1}
