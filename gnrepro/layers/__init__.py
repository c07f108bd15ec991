"""Layers of the paper's Sec. 3 and its baselines: the normalizations (BN per worker, Batch Renorm,
GN and its LN/IN limits, precise BN statistics), the factory that builds one from a string key, and the
convolution factories (plain, Weight Standardization)."""
