"""Checking IAM grants against what the code does: moto enforces no IAM, so the tests do.

A RecordingStore notes every store call (who, S3 action, key); :func:`denied` lists the calls the role of
``who`` in the stacks (stacks/processing.py, stacks/gpu_workers.py) does not grant.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from mycelium.core.store import Store


class RecordingStore(Store):
    """A store that notes every call (who, S3 action, key), to check each role's IAM grants against them."""

    def __init__(self, inner: Store, ops: list, who: str):
        self.inner, self.ops, self.who = inner, ops, who
        self.url, self.prefix = inner.url, getattr(inner, "prefix", "")

    def _note(self, action: str, key: str):
        self.ops.append((self.who, action, key))

    def get(self, key):
        self._note("s3:GetObject", key)
        return self.inner.get(key)

    def exists(self, key):
        self._note("s3:GetObject", key)  # HEAD needs GetObject
        return self.inner.exists(key)

    def put(self, key, data):
        self._note("s3:PutObject", key)
        self.inner.put(key, data)

    def delete(self, key):
        self._note("s3:DeleteObject", key)
        self.inner.delete(key)

    def list(self, prefix=""):
        self._note("s3:ListBucket", prefix)
        return self.inner.list(prefix)



def granted(who: str) -> dict[str, tuple[str, ...]]:
    """The key patterns under runs/<run>/ that the role of ``who`` may read, write and delete (from the stacks)."""
    from stacks.gpu_workers import CAPTURE_DELETES, CAPTURE_READS, CAPTURE_WRITES, TRAIN_READS, TRAIN_WRITES
    from stacks.processing import STAGES

    if who == "capture":
        return {"s3:GetObject": CAPTURE_READS, "s3:PutObject": CAPTURE_WRITES, "s3:DeleteObject": CAPTURE_DELETES}
    if who == "train":
        return {"s3:GetObject": TRAIN_READS, "s3:PutObject": TRAIN_WRITES, "s3:DeleteObject": ()}
    spec = STAGES[who]
    return {"s3:GetObject": spec.reads, "s3:PutObject": spec.writes, "s3:DeleteObject": spec.deletes}




def denied(ops: list, run: str) -> list:
    out = []
    for who, action, key in ops:
        if action == "s3:ListBucket":
            ok = key.startswith(run) and "/" in key  # ListBucket is granted under runs/* only (the run, its mop-ups)
        else:
            rest = key.split("/", 1)[1]
            ok = any(fnmatchcase(rest, pattern) for pattern in granted(who)[action])
        if not ok:
            out.append((who, action, key))
    return out
