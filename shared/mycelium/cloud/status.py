"""A cloud run's progress for ``mycelium status``, and how it ended (``status/run.json``).

``mycelium submit`` needs nothing from here (it is an upload: see :func:`mycelium.cloud.manifest.submit`).
"""

from __future__ import annotations

import datetime as _dt
import json

from ..core.errors import MyceliumError
from ..core.keys import RunKeys
from ..core.store import Store
from ..core.summary import load_summary
from .manifest import MANIFEST

#: The state machine's name (the orchestration stack names it ``<prefix>-pipeline``).
PIPELINE = "pipeline"


def state_machine_arn(sfn, name: str = "mycelium") -> str:
    want = f"{name}-{PIPELINE}"
    for page in sfn.get_paginator("list_state_machines").paginate():
        for sm in page["stateMachines"]:
            if sm["name"] == want:
                return sm["stateMachineArn"]
    raise MyceliumError(f"no state machine named {want!r} in this account and region: run `mycelium deploy` first")


def find_execution(sfn, machine_arn: str, run: str, prefix: str = "runs", look_back: int = 200) -> dict | None:
    """The newest execution started by ``<prefix>/<run>/manifest.json`` (executions are named by EventBridge)."""
    key = f"{prefix}/{run}/{MANIFEST}"
    seen = 0
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine_arn):
        for ex in page["executions"]:  # newest first
            desc = sfn.describe_execution(executionArn=ex["executionArn"])
            event = json.loads(desc.get("input") or "{}")
            if event.get("detail", {}).get("object", {}).get("key") == key:
                return desc
            seen += 1
            if seen >= look_back:
                return None
    return None


def run_status(sfn, store: Store, machine_arn: str, run: str) -> dict:
    """Execution status, map-run item counts, and what the bucket says (capture workers, the run's end)."""
    keys = RunKeys(run)
    out: dict = {"run": run, "submitted": store.exists(keys(MANIFEST)), "execution": None, "map_runs": []}
    desc = find_execution(sfn, machine_arn, run, getattr(store, "prefix", "runs") or "runs")
    if desc is not None:
        out["execution"] = {k: str(desc[k]) for k in ("executionArn", "status", "startDate", "stopDate") if k in desc}
        for mr in sfn.list_map_runs(executionArn=desc["executionArn"]).get("mapRuns", []):
            d = sfn.describe_map_run(mapRunArn=mr["mapRunArn"])
            counts = d.get("itemCounts", {})
            out["map_runs"].append({"status": d.get("status"), **{k: counts.get(k, 0) for k in (
                "pending", "running", "succeeded", "failed", "timedOut", "aborted", "total")}})
    workers = [store.get_json(k) for k in store.list(keys("status", "capture") + "/") if k.endswith(".json")]
    out["capture_jobs"] = {s: sum(w.get("state") == s for w in workers) for s in ("succeeded", "failed")}
    out["chunks"] = sum(1 for _ in store.list(keys.commits("capture")))
    out["ended"] = store.get_json(keys("status", "run.json")) if store.exists(keys("status", "run.json")) else None
    out["stages"] = {name: {"in": st.n_in, "out": st.n_out, "failed": st.failed}
                     for name, st in load_summary(store, keys).stages.items()}
    improve = keys("rounds", "improve.json")
    if store.exists(improve):
        rep = store.get_json(improve)
        last = rep["rounds"][-1]
        out["improve"] = {"round": last["round"], "val_accuracy": last.get("val_accuracy"),
                          "teacher_calls": rep["teacher_calls"], "stopped": rep["stopped"],
                          "rounds": [{"round": r["round"], "val_accuracy": r.get("val_accuracy"),
                                      "teacher_calls": r["teacher_calls"]} for r in rep["rounds"]]}
    return out


def format_status(st: dict) -> str:
    lines = [f"run {st['run']}" + ("" if st["submitted"] else " (no manifest: not submitted)")]
    ex = st["execution"]
    lines.append(f"execution: {ex['status']} since {ex.get('startDate')}  {ex['executionArn']}" if ex
                 else "execution: none found (the upload may not have reached the rule yet)")
    lines.append(f"capture: {st['chunks']} chunks; worker jobs succeeded {st['capture_jobs']['succeeded']}, "
                 f"failed {st['capture_jobs']['failed']}")
    for mr in st["map_runs"]:
        lines.append("map run: {status}; pending {pending}, running {running}, succeeded {succeeded}, "
                     "failed {failed}, timed out {timedOut}, aborted {aborted} of {total}".format(**mr))
    for name, c in st.get("stages", {}).items():
        lines.append(f"  {name:12} in {c['in']:>7}  out {c['out']:>7}  failed {c['failed']:>5}")
    imp = st.get("improve")
    if imp:
        acc = ", ".join(f"r{r['round']} {r['val_accuracy'] if r['val_accuracy'] is not None else '-'}"
                        for r in imp["rounds"])
        lines.append(f"improvement round {imp['round']}: val accuracy {acc}; teacher calls {imp['teacher_calls']}"
                     + (f"; stopped: {imp['stopped']}" if imp["stopped"] else ""))
    if st["ended"]:
        end = st["ended"]
        lines.append(f"ended {end['state']} at {end['at']}" + (f": {end['error']}: {end['cause']}" if end["error"] else ""))
    return "\n".join(lines)


def record_run_status(store: Store, keys: RunKeys, state: str, error: str | None = None, cause: str | None = None,
                      outputs: dict | None = None) -> dict:
    """``status/run.json``: how a run ended, so nobody has to read the execution history to learn why."""
    status = {"run": keys.run, "state": state, "error": error, "cause": cause, "outputs": outputs or {},
              "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    store.put_json(keys("status", "run.json"), status)
    return status
