"""Studies: reproducible experiments over the shipped models (trade-off curves, backend comparisons)."""
