"""Programs: a CoT's calculations assembled into a DAG over the problem's numbers, executed in the sandbox,
turned into the six specialists' examples, and augmented with re-sampled numbers. Pure: no store."""
