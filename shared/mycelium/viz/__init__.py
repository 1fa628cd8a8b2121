"""For people: `mycelium show` (steps over the problem text), `mycelium inspect` (token boundaries, heat map), plots."""
