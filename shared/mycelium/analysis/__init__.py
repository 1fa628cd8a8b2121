"""From a chunk to steps: signals, time series, boundaries, heartbeats, grounding, clauses, number words. Pure."""
