"""The run manifest, and the deploy command line (no AWS needed)."""

import pytest

from mycelium.cloud.deploy import deploy_command
from mycelium.core.errors import MyceliumError
from mycelium.cloud.manifest import RunManifest, load_manifest, run_of_key, submit
from mycelium.core.keys import RunKeys
from mycelium.core.store import LocalStore

from ..conftest import SAMPLE


def test_deploy_passes_the_context_the_stacks_read():
    argv = deploy_command("my-bucket", "eu-west-1", spot=True, max_vcpus=32, cdk="/bin/cdk", train_gpus=4)
    assert argv[:5] == ["/bin/cdk", "deploy", "--all", "--require-approval", "never"]
    ctx = [argv[i + 1] for i, a in enumerate(argv) if a == "--context"]
    assert ctx == ["mycelium:bucket=my-bucket", "mycelium:name=mycelium", "mycelium:region=eu-west-1",
                   "mycelium:spot=true", "mycelium:max_vcpus=32", "mycelium:train_gpus=4"]
    assert argv[argv.index("--app") + 1].endswith(" app.py")
    assert deploy_command("b", synth_only=True, cdk="cdk")[1] == "synth"


def test_deploy_without_the_cdk_cli_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(MyceliumError, match="npm install -g aws-cdk"):
        deploy_command("b")


@pytest.mark.parametrize("key, run", [("runs/gsm8k-train/manifest.json", "gsm8k-train"), ("runs/a.b_c-1/manifest.json", "a.b_c-1")])
def test_run_of_a_manifest_key(key, run):
    assert run_of_key(key) == run


@pytest.mark.parametrize("key", ["runs/a/b/manifest.json", "runs/manifest.json", "other/a/manifest.json",
                                 "runs/a/manifest.jsonx", "runs/_x/manifest.json"])
def test_other_keys_are_not_runs(key):
    with pytest.raises((MyceliumError, ValueError)):
        run_of_key(key)


def test_submit_uploads_data_then_manifest_and_refuses_a_changed_resubmit(tmp_path):
    store, keys = LocalStore(tmp_path), RunKeys("r1")
    m = submit(store, keys, SAMPLE)
    assert load_manifest(store, keys) == m and store.get(keys(m.data)) == SAMPLE.read_bytes()
    assert submit(store, keys, SAMPLE) == m  # the same submission again: a rerun
    other = tmp_path / "other.jsonl"
    other.write_bytes(SAMPLE.read_bytes()[:200])
    with pytest.raises(MyceliumError, match="other data or configs"):
        submit(store, keys, other)


def test_a_bad_manifest_names_its_key(tmp_path):
    store, keys = LocalStore(tmp_path), RunKeys("r2")
    store.put_json("r2/manifest.json", {"data": "input/x.jsonl", "data_sha256": "z"})
    with pytest.raises(MyceliumError, match=r"(?s)r2/manifest.json: bad run manifest.*data_sha256"):
        load_manifest(store, keys)
    assert RunManifest.model_json_schema()["properties"]["map"]
