"""The specialists on a tiny backbone: training, saving, loading (and refusing), top layers, DDP = one process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mycelium.core.errors import ConfigError, RunNotFoundError
from mycelium.core.store import LocalStore
from mycelium.records.programs import COMPONENTS
from mycelium.stages.train import run_train
from mycelium.students.encode import frozen_features, tokens_of_span
from mycelium.students.saved import build, load
from mycelium.students.train import TrainOptions

from ..conftest import ROOT, make_tiny_model
from .test_label_stage import labelled  # noqa: F401 - the tiny run, labelled and merged

OPTS = TrainOptions(epochs=2, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def trained(labelled, tiny_teacher, tmp_path_factory):  # noqa: F811
    store, _ = labelled
    out = tmp_path_factory.mktemp("models")
    results = run_train(store, "l", out, tiny_teacher, list(COMPONENTS), opts=OPTS, hidden=32, adapter_layers=1)
    return store, out, results


def test_every_component_is_trained_scored_beside_its_baselines_and_saved(trained):
    _, out, results = trained
    for c in COMPONENTS:
        r = results[c]
        assert r["n_train"] > 0 and r["n_val"] > 0 and 1 <= r["best_epoch"] <= OPTS.epochs
        assert r["val"] and r["baselines"] and all(0 <= v <= 1 for k, v in r["val"].items() if k != "heartbeat_mae")
        assert {"model.safetensors", "config.json", "provenance.json", "metrics.json", "curve.png"} <= \
            {p.name for p in (out / c).iterdir()}
        prov = json.loads((out / c / "provenance.json").read_text())
        assert prov["merge_lineage"]["merge"] and len(prov["sha256"]) == 12


def test_a_saved_student_loads_and_predicts_the_same(trained, tiny_teacher):
    store, out, _ = trained
    from mycelium.students.data import Vocab, make_item
    from mycelium.students.decode import collate

    model = load(out / "C3", tiny_teacher)
    fresh = load(out / "C3", tiny_teacher)
    ex = json.loads(store.get("l/training/C3/train.jsonl").decode().splitlines()[0])
    enc = frozen_features(tiny_teacher, [ex["question"]], 0, progress=False)[ex["question"]]
    item = make_item("C3", ex["question"], None, enc, Vocab(**model.cfg.vocab))
    with torch.no_grad():
        a, b = model(collate([item], "C3")), fresh(collate([item], "C3"))
    assert torch.equal(a["pointers"], b["pointers"]) and a["pointers"].shape[-1] >= len(item.mention_tokens)


def test_a_student_of_another_backbone_or_a_broken_config_is_refused(trained, tiny_tokenizer, tmp_path):
    from mycelium.teacher.model import from_model

    _, out, _ = trained
    other = from_model(make_tiny_model(tiny_tokenizer, layers=2), tiny_tokenizer, "tiny-llama-test")
    with pytest.raises(ConfigError, match="trained on backbone"):
        load(out / "C1", other)
    broken = tmp_path / "C1"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"component": "C1", "surprise": 1}))
    with pytest.raises(ConfigError, match="not a student config"):
        load(broken, other)
    with pytest.raises(ConfigError, match="no saved student"):
        load(tmp_path / "nothing", other)


def test_training_needs_merged_data(tiny_teacher, tmp_path):
    with pytest.raises(RunNotFoundError, match="mycelium merge"):
        run_train(LocalStore(tmp_path), "none", tmp_path / "m", tiny_teacher, ["C1"], opts=OPTS)


def test_trained_top_layers_continue_the_frozen_ones_exactly(tiny_teacher):
    """With K top layers trained, frozen features at layer L - K run through the student's copies of the top
    layers give the backbone's own final hidden states (the causal mask and rotary positions are right)."""
    text = "Ann has 12 apples and buys 3 more. How many apples does she have?"
    enc = frozen_features(tiny_teacher, [text], train_layers=1, progress=False)[text]
    from mycelium.students.data import Vocab
    from mycelium.students.model import StudentConfig

    vocab = Vocab(templates=["T0"], shapes=["{} + {}"], constants=[], max_nodes=4, max_operands=2)
    cfg = StudentConfig(component="C1", backbone="b", d_in=32, vocab=vars(vocab), train_layers=1, hidden=32,
                        adapter_layers=1)
    student = build(cfg, tiny_teacher)
    x = torch.from_numpy(enc.features.astype(np.float32)).unsqueeze(0)
    with torch.no_grad():
        h = student.run_top(x, torch.ones(x.shape[:2], dtype=torch.bool))
        full = tiny_teacher.model.get_decoder()(input_ids=torch.from_numpy(enc.ids).unsqueeze(0)).last_hidden_state
    assert torch.allclose(h, full, atol=3e-3)  # the cached features are float16 (relative rounding 5e-4)
    assert not torch.allclose(h[:, :-1], full[:, 1:], atol=3e-3)  # a one-token shift is far outside it
    assert tokens_of_span(enc.offsets, (text.index("12"), text.index("12") + 2)) != (0, 0)


@pytest.mark.skipif(not hasattr(torch.distributed, "is_available") or not torch.distributed.is_available(),
                    reason="torch.distributed is not built")
def test_two_ddp_processes_train_the_same_model_as_one(labelled, tiny_teacher, tmp_path):  # noqa: F811
    """torchrun --nproc_per_node 2 (gloo on CPU) against one process: the same global batches, so the same
    weights within float tolerance (per-example means: C2's and C6's losses)."""
    from safetensors.torch import load_file

    store, _ = labelled
    backbone = tmp_path / "backbone"
    tiny_teacher.model.save_pretrained(backbone)
    tiny_teacher.tokenizer.save_pretrained(backbone)
    args = ["train", "--run", "l", "--store", str(store.root), "--components", "C6", "--backbone", str(backbone),
            "--epochs", "2", "--batch-size", "8", "--hidden", "32", "--adapter-layers", "1", "--dropout", "0",
            "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "mycelium.cli", *args, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "mycelium.cli", "--", *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (load_file(str(tmp_path / d / "C6" / "model.safetensors")) for d in ("one", "two"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst
    assert json.loads((tmp_path / "one" / "C6" / "metrics.json").read_text())["val"] == \
        json.loads((tmp_path / "two" / "C6" / "metrics.json").read_text())["val"]


def test_training_data_changed_after_merge_is_refused(labelled, tiny_teacher, tmp_path):  # noqa: F811
    import shutil

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(labelled[0].root, store.root)
    key = "l/training/C2/train.jsonl"
    store.put(key, store.get(key) + store.get(key).splitlines(keepends=True)[0])
    with pytest.raises(RunNotFoundError, match="not the bytes merge committed"):
        run_train(store, "l", tmp_path / "m", tiny_teacher, ["C2"], opts=OPTS)


def test_the_training_worker_trains_uploads_and_reports(labelled, tiny_teacher, tmp_path):  # noqa: F811
    """gpu_workers/train/entry_point.py as Batch runs it (one process without a GPU): the models land under
    <run>/models/<C>/ in the store and status/train/<job>.json says succeeded; a failing train says why."""
    import shutil

    from gpu_workers.train import entry_point

    store = LocalStore(tmp_path / "copy")
    shutil.copytree(labelled[0].root, store.root)
    backbone = tmp_path / "backbone"
    tiny_teacher.model.save_pretrained(backbone)
    tiny_teacher.tokenizer.save_pretrained(backbone)
    common = ["--store", str(store.root), "--nproc", "1", "--components", "C6", "--backbone", str(backbone),
              "--epochs", "1", "--hidden", "32", "--adapter-layers", "1"]
    assert entry_point.main([*common, "--run", "l"]) == 0
    status = store.get_json("l/status/train/local.json")
    assert status["state"] == "succeeded" and "format_accuracy" in status["val"]["C6"]
    assert {"model.safetensors", "config.json", "metrics.json"} <= {k.rsplit("/", 1)[-1] for k in store.list("l/models/C6/")}
    assert entry_point.main([*common, "--run", "nothing-here"]) == 1
    failed = store.get_json("nothing-here/status/train/local.json")
    assert failed["state"] == "failed" and "mycelium merge" in failed["error"]


def test_placeholders_hide_the_numbers_and_keep_offsets_in_the_original_text(tiny_teacher):
    from mycelium.students.data import candidate_mentions
    from mycelium.students.encode import abstract_numbers, tokenize_for

    text = "Tom has 12 apples and buys three more; half of them, 7.5, go."
    abstract, spans = abstract_numbers(text)
    assert abstract == "Tom has N0 apples and buys N1 more; N2 of them, N3, go." and len(spans) == len(abstract)
    ids, offsets = tokenize_for(tiny_teacher.tokenizer, text, placeholders=True)
    plain_ids, _ = tokenize_for(tiny_teacher.tokenizer, text, placeholders=False)
    assert not np.array_equal(ids, plain_ids)  # the backbone reads other tokens ...
    assert tiny_teacher.tokenizer.decode(ids) == abstract
    for s, e in candidate_mentions(text):  # ... and every mention is still found at its original characters
        i, j = tokens_of_span(offsets, (s, e))
        assert j > i and offsets[i][0] <= s and offsets[j - 1][1] >= e
        assert "N" in tiny_teacher.tokenizer.decode(ids[i:j])
    assert offsets[:, 1].max() <= len(text) and (np.diff(offsets[:, 0]) >= 0).all()
    enc = frozen_features(tiny_teacher, [text], 0, progress=False, placeholders=True)[text]
    assert np.array_equal(enc.ids, ids) and np.array_equal(enc.offsets, offsets)


def test_a_lora_student_trains_adapters_only_and_loads_back(labelled, tiny_teacher, tmp_path):  # noqa: F811
    store, _ = labelled
    out = tmp_path / "lora"
    results = run_train(store, "l", out, tiny_teacher, ["C1"], opts=TrainOptions(epochs=1, batch_size=8, progress=False),
                        train_layers=1, lora_rank=4, hidden=32, adapter_layers=1)
    assert results["C1"]["val"]["char_f1"] >= 0
    model = load(out / "C1", tiny_teacher)
    decoder = tiny_teacher.model.get_decoder()
    base = dict(decoder.layers[-1].named_parameters())
    lora = {n: p for n, p in model.top[0].named_parameters() if "lora_" in n}
    assert lora and any(float(p.detach().abs().sum()) > 0 for n, p in lora.items() if "lora_B" in n)  # trained (B starts at 0)
    for n, p in model.top[0].named_parameters():  # the layer's own weights are the backbone's, untouched
        if "lora_" not in n:
            assert torch.equal(p, base[n.replace(".base_layer", "")]), n
    with pytest.raises(ConfigError, match="set train_layers"):
        from mycelium.students.model import StudentConfig
        build(StudentConfig(component="C1", backbone="b", d_in=32, vocab=model.cfg.vocab, lora_rank=4))


def test_the_feature_cache_gives_the_same_features_without_the_backbone(tiny_teacher, tmp_path, monkeypatch):
    texts = ["Ann has 3 pens and buys 4 more.", "How many pens does Ann have now?"]
    first = frozen_features(tiny_teacher, texts, 0, progress=False, cache=tmp_path)
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    other = frozen_features(tiny_teacher, texts[:1], 0, progress=False, cache=tmp_path, placeholders=True)
    assert len(list(tmp_path.rglob("*.npz"))) == 3 and not np.array_equal(other[texts[0]].ids, first[texts[0]].ids)

    def no_backbone():
        raise AssertionError("the backbone ran on a cached text")

    monkeypatch.setattr(tiny_teacher.model, "get_decoder", no_backbone)
    again = frozen_features(tiny_teacher, texts, 0, progress=False, cache=tmp_path)
    for t in texts:
        assert np.array_equal(again[t].features, first[t].features) and np.array_equal(again[t].offsets, first[t].offsets)


def test_length_batches_cover_every_example_once_with_little_padding():
    import random

    from mycelium.students.train import length_batches

    lengths = [random.Random(i).randint(10, 200) for i in range(1000)]
    batches = length_batches(lengths, 32, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == length_batches(lengths, 32, random.Random(0))  # the same on every rank
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = sum(32 * max(lengths[i] for i in range(s, min(s + 32, 1000))) for s in range(0, 1000, 32))
    assert padded < 0.6 * plain
