"""The six specialists C1..C6: students that read the problem text only. Their metrics and trivial baselines."""
