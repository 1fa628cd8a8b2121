"""Mycelium: distil a teacher LLM's generation-phase attention into small solvers.

The core library, by layer (each imports only the ones before it): ``core`` (store, keys, ledger,
lineage, configs), ``mathlang``, ``records``, ``analysis``, ``teacher``, ``templates``, ``viz``,
``stages`` (the Stage abstraction and one module per stage), and the adapters ``cloud`` and ``cli``.
Lambda handlers, GPU worker entry points and the CLI are thin wrappers around the stages here.
"""

__version__ = "0.1.0"
