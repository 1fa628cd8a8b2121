"""A worker's final status object, written whatever happens, so an orchestrator never waits on a silent worker."""

from __future__ import annotations

import json
import sys
import time
import traceback


def report(store, key: str, status: dict, work) -> int:
    """Run ``work()`` -> (ok, fields); write ``status`` with state succeeded/failed (and the error and traceback
    when it raised) to ``key``; the exit code (0 when ok). If the store cannot take it, stderr gets it."""
    status.setdefault("started", time.time())
    try:
        ok, out = work()
        status.update(state="succeeded" if ok else "failed", **out)
        return 0 if ok else 1
    except BaseException as e:  # noqa: BLE001 - the status object must say why
        status.update(state="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        return 1
    finally:
        status["finished"] = time.time()
        try:
            store.put_json(key, status)
        except Exception:  # noqa: BLE001 - last resort: stderr, which Batch sends to CloudWatch
            print(json.dumps(status), file=sys.stderr)
