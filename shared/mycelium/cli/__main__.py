"""``python -m mycelium.cli``: the same command, for launchers that take a module (``torchrun -m``)."""

import sys

from .main import main

sys.exit(main())
