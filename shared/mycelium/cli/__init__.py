"""The ``mycelium`` command line: options (``main``) and what each command does (``commands``)."""

from .main import main

__all__ = ["main"]
