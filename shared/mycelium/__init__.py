"""Mycelium: distil a teacher LLM's generation-phase attention into small solvers.

The core library. Lambda handlers, GPU worker entry points, the local runner and
the CLI are thin wrappers around the functions here.
"""

__version__ = "0.1.0"
