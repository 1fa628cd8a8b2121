"""Today's code for a benchmark's ratios: the library as it was at a git commit, importable in a child process.

    env = baseline_env()            # PYTHONPATH of that commit's ``shared/``, or None (no git, no such commit)
    subprocess.run([sys.executable, script, ...], env=env)

The benchmarks run the same measurement in one process per variant, the old code's beside the new, so every
ratio they print is measured in one run on one machine.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: main before the performance work of issue 15 (chunk v2, persistent sandbox, faster IB, batched capture).
BASELINE_REF = os.environ.get("MYCELIUM_BASELINE_REF", "24254aa")


@functools.lru_cache(maxsize=None)
def baseline_env(ref: str = BASELINE_REF) -> dict | None:
    """An environment whose ``import mycelium`` is the library at ``ref`` (extracted once per process; copy it
    before changing it)."""
    tmp = tempfile.mkdtemp(prefix="mycelium-baseline-")
    atexit.register(shutil.rmtree, tmp, True)
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "shared"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {**os.environ, "PYTHONPATH": str(Path(tmp) / "shared")}
