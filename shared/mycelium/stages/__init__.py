"""The stages, each on one Stage abstraction (``base``) run by one local runner (``runner``), a Lambda or a worker.

Import a stage's module where it is needed: the Lambda image has no torch, and only ``capture`` uses it.
"""
