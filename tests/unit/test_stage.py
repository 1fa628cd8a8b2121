"""The Stage abstraction on a toy stage: commit last, the ledger, lineage, begin, a crashed pool worker."""

import os

import pytest
from pydantic import Field

from mycelium.cli import main
from mycelium.core.config import IngestConfig, StageConfig
from mycelium.core.errors import RunNotFoundError
from mycelium.core.keys import RunKeys
from mycelium.core.lineage import current_lineage, mismatch, read_commit
from mycelium.core.store import LocalStore
from mycelium.core.summary import StageSummary
from mycelium.stages.base import Outputs, ReduceStage, SkipItem, Stage, committed, run_one
from mycelium.stages.ingest import IngestStage
from mycelium.stages.problems import problem_ids
from mycelium.stages.runner import run_stage

from ..conftest import SAMPLE


class ToyConfig(StageConfig):
    _runtime_only = frozenset({"crash_on", "fail_on"})
    suffix: str = "!"
    crash_on: str | None = Field(None, description="the worker process dies on this item (as the OOM killer does)")
    fail_on: str | None = None


class ToyStage(Stage):
    """One output per problem: its id and the config's suffix."""

    name = "toy"
    after = "ingest"
    parallel = True
    config_type = ToyConfig

    def items(self):
        return problem_ids(self.store, self.keys)

    def process(self, pid):
        if pid not in self.problems:
            raise SkipItem("not among the run's problems (ingest)")
        if pid == self.config.crash_on:
            os._exit(9)
        if pid == self.config.fail_on:
            raise ValueError(f"cannot do {pid}")
        return Outputs(files={self.keys("toy", f"{pid}.txt"): (pid + self.config.suffix).encode()},
                       counters={"chars": len(pid) + len(self.config.suffix)})


@pytest.fixture
def run(tmp_path):
    store = LocalStore(tmp_path / "store")
    run_stage(IngestStage(store, "t", IngestConfig(limit=6), SAMPLE), progress=False)
    return store


def test_outputs_then_commit_then_ledger_cleared(run):
    keys = RunKeys("t")
    pids = problem_ids(run, keys)
    run.put_json(keys.failure("toy", pids[0]), {"reason": "an earlier failure"})
    summary = run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)
    assert (summary.n_in, summary.n_out, summary.failed, summary.counters["chars"]) == (6, 6, 0, 6 * 14)
    commit = read_commit(run, keys, "toy", pids[0])
    assert commit.lineage == {"ingest": current_lineage(run, keys, "ingest")["ingest"], "toy": ToyConfig().hash()}
    assert list(commit.outputs) == [f"t/toy/{pids[0]}.txt"]
    assert not run.exists(keys.failure("toy", pids[0]))  # the item succeeded: its ledger entry is gone
    again = run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)
    assert again.skipped == {"already done": 6} and again.n_out == 0


def test_a_new_config_redoes_every_item_and_a_runtime_field_does_not(run):
    run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)
    same = run_stage(ToyStage(run, "t", ToyConfig(fail_on="p000000000000")), progress=False, workers=1)
    assert same.skipped == {"already done": 6}
    other = run_stage(ToyStage(run, "t", ToyConfig(suffix="?")), progress=False, workers=1)
    assert other.n_out == 6
    assert run.get_json(RunKeys("t").stage_record("toy"))["config"]["suffix"] == "?"  # the run's current config


def test_a_failing_item_is_a_ledger_entry_and_the_stage_goes_on(run):
    keys = RunKeys("t")
    victim = problem_ids(run, keys)[2]
    summary = run_stage(ToyStage(run, "t", ToyConfig(fail_on=victim)), progress=False, workers=1)
    assert (summary.n_out, summary.failed) == (5, 1)
    failure = run.get_json(keys.failure("toy", victim))
    assert failure["reason"] == f"ValueError: cannot do {victim}" and "Traceback" in failure["traceback"]
    assert read_commit(run, keys, "toy", victim) is None
    assert run.get_json(keys.summary)["stages"]["toy"]["failed"] == 1


def test_a_worker_killed_mid_item_is_a_ledger_entry_not_an_aborted_stage(run):
    keys = RunKeys("t")
    victim = problem_ids(run, keys)[1]
    summary = run_stage(ToyStage(run, "t", ToyConfig(crash_on=victim)), progress=False, workers=2)
    assert (summary.n_in, summary.failed, summary.n_out + summary.skipped.get("already done", 0)) == (6, 1, 5)
    assert "worker process died" in run.get_json(keys.failure("toy", victim))["reason"]
    assert all(read_commit(run, keys, "toy", p) for p in problem_ids(run, keys) if p != victim)
    # the item runs again next time, and its success clears the entry
    run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=2)
    assert not run.exists(keys.failure("toy", victim)) and read_commit(run, keys, "toy", victim)


def test_a_corrupt_commit_marker_is_a_ledger_entry(run):
    keys = RunKeys("t")
    run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)
    victim = problem_ids(run, keys)[0]
    run.put(keys.commit("toy", victim), b"{not json")
    summary = run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=2)
    assert (summary.failed, summary.skipped) == (1, {"already done": 5})
    reason = run.get_json(keys.failure("toy", victim))["reason"]
    assert f"t/commits/toy/{victim}.json" in reason and "corrupt commit marker" in reason


def test_an_unknown_run_is_refused_before_anything_is_written(tmp_path, capsys):
    store = LocalStore(tmp_path / "s")
    with pytest.raises(RunNotFoundError, match="run 'nope' .* has no ingest stage"):
        run_stage(ToyStage(store, "nope", ToyConfig()), progress=False)
    for command in ("analyze", "aggregate", "discover"):
        assert main([command, "--run", "no-such-run", "--store", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert "run 'no-such-run'" in err and "first" in err, err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*"))


def test_a_pinned_stage_refuses_another_config(run, tmp_path):
    from mycelium.core.errors import ConfigError

    other = tmp_path / "other.jsonl"
    other.write_text(SAMPLE.read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="ingest stage is pinned .*data_sha256.*Use a new --run name"):
        run_stage(IngestStage(run, "t", IngestConfig(limit=6), other), progress=False)
    with pytest.raises(ConfigError, match="dataset_format: auto -> plain"):
        run_stage(IngestStage(run, "t", IngestConfig(limit=6, dataset_format="plain"), SAMPLE), progress=False)


def test_a_smaller_limit_reshards_and_later_stages_take_only_the_run_s_problems(run):
    keys = RunKeys("t")
    run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)
    assert len(list(run.list("t/problems/"))) == 1
    small = run_stage(IngestStage(run, "t", IngestConfig(limit=2, shard_size=1), SAMPLE), progress=False)
    assert small.n_out == 2 and list(run.list("t/problems/")) == [keys.shard(0), keys.shard(1)]
    kept = problem_ids(run, keys)
    assert len(kept) == 2
    toy = ToyStage(run, "t", ToyConfig())
    assert [run_one(toy, p).status for p in kept] == ["skipped", "skipped"]  # the same lineage: still done
    from mycelium.stages.base import committed
    from mycelium.core.summary import StageSummary

    seen = StageSummary()
    assert sorted(c.item for c in committed(toy, "toy", toy.lineage, seen)) == sorted(kept)
    assert seen.skipped == {"toy output of a problem outside the run's problems": 4}
    # a larger limit again: the same problems come back, already done, nothing mixed or redone
    run_stage(IngestStage(run, "t", IngestConfig(limit=6), SAMPLE), progress=False)
    assert run_stage(toy, progress=False, workers=1).skipped == {"already done": 6}


def test_a_slow_consumer_loses_no_item_when_the_pool_breaks(run):
    """Results are consumed slowly while a worker dies: every item still ends done or in the ledger."""
    import time

    from mycelium.stages.runner import _pooled

    keys = RunKeys("t")
    pids = problem_ids(run, keys)
    stage = ToyStage(run, "t", ToyConfig(crash_on=pids[3]))
    stage.begin()
    seen = []
    for result in _pooled(stage, pids, 2):
        seen.append((result.item, result.status))
        time.sleep(0.5)  # the pool breaks while the consumer is away
    assert sorted(item for item, _ in seen) == sorted(pids)
    # an item whose result was in flight when the pool broke is run again alone and found committed
    assert dict(seen)[pids[3]] == "failed" and sum(st in ("done", "skipped") for _, st in seen) == 5


def test_a_config_that_stops_the_stage_leaves_the_run_s_current_config(run):
    from mycelium.core.errors import ConfigError

    class Picky(ToyStage):
        def process(self, pid):
            raise ConfigError("suffix '?' cannot work")

    run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)
    before = run.get(RunKeys("t").stage_record("toy"))
    with pytest.raises(ConfigError):
        run_stage(Picky(run, "t", ToyConfig(suffix="?")), progress=False, workers=1)
    assert run.get(RunKeys("t").stage_record("toy")) == before  # the outputs of the old config stay current
    assert run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1).skipped == {"already done": 6}


def test_shards_that_are_not_what_ingest_committed_stop_the_stage(run):
    from mycelium.core.errors import IntegrityError

    keys = RunKeys("t")
    shard = keys.shard(0)
    run.put(shard, b"\n".join(run.get(shard).splitlines()[:3]) + b"\n")  # an interrupted re-ingest
    with pytest.raises(IntegrityError, match="is not the shard ingest committed"):
        run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)


def test_the_store_tally_counts_each_item_once(run):
    from mycelium.stages.base import tally_from_store

    keys = RunKeys("t")
    pids = problem_ids(run, keys)
    run_stage(ToyStage(run, "t", ToyConfig(fail_on=pids[0])), progress=False, workers=1)
    run.put(keys.commit("toy", pids[1]), b"{broken")
    summary = tally_from_store(ToyStage(run, "t", ToyConfig()))
    assert (summary.n_in, summary.n_out, summary.failed) == (6, 4, 1)
    assert summary.skipped == {"corrupt toy commit marker": 1} and summary.counters["chars"] == 4 * 14


class ToyReduce(ReduceStage):
    """Joins every current toy output: its result depends on which toy items exist, not only on configs."""

    name = "toyjoin"
    after = "toy"
    config_type = ToyConfig

    def process(self, item):
        seen = StageSummary()
        parts = [self.read_verified(c, self.keys("toy", f"{c.item}.txt"))
                 for c in committed(self, "toy", self.upstream_lineage, seen)]
        return Outputs(files={self.keys("toyjoin", "all.txt"): b"|".join(sorted(parts))})


class ToyAfterReduce(ToyStage):
    name = "toyafter"
    after = "toyjoin"


def test_a_reduce_over_other_inputs_makes_what_was_made_from_it_stale(run):
    keys = RunKeys("t")
    pids = problem_ids(run, keys)
    run_stage(ToyStage(run, "t", ToyConfig(fail_on=pids[0])), progress=False, workers=1)  # 5 of 6 items
    run_stage(ToyReduce(run, "t", ToyConfig()), progress=False)
    first = read_commit(run, keys, "toyjoin", "run").lineage["toyjoin"]
    assert first.startswith(ToyConfig().hash() + "+") and current_lineage(run, keys, "toyjoin")["toyjoin"] == first
    assert run_stage(ToyAfterReduce(run, "t", ToyConfig()), progress=False, workers=1).n_out == 6
    # the same configs, one more input: the reduce's output changes, and so must its lineage
    run_stage(ToyStage(run, "t", ToyConfig()), progress=False, workers=1)
    run_stage(ToyReduce(run, "t", ToyConfig()), progress=False)
    second = current_lineage(run, keys, "toyjoin")["toyjoin"]
    assert second != first and second == read_commit(run, keys, "toyjoin", "run").lineage["toyjoin"]
    stage = ToyAfterReduce(run, "t", ToyConfig())
    assert "made from another toyjoin output" in mismatch(stage.lineage, read_commit(run, keys, "toyafter", pids[1]).lineage)
    again = run_stage(stage, progress=False, workers=1)
    assert again.n_out == 6 and "already done" not in again.skipped  # redone, not taken as done
    # the same inputs again: the same digest, and nothing downstream is redone
    run_stage(ToyReduce(run, "t", ToyConfig()), progress=False)
    assert current_lineage(run, keys, "toyjoin")["toyjoin"] == second
    assert run_stage(ToyAfterReduce(run, "t", ToyConfig()), progress=False, workers=1).skipped == {"already done": 6}
