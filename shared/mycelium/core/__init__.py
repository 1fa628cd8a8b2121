"""The machinery every stage shares: store, keys, ledger, lineage, configs, errors, sandbox, information measures.

Nothing here imports another Mycelium package: ``core`` is the bottom layer.
"""
