"""Operation templates: the IB inputs, the Information Bottleneck anneal, the taxonomy cut and surface tension."""
