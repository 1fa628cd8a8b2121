"""Typed, versioned artifacts that cross stage boundaries: problems and dataset rows, traces, chunks, analysis."""
