"""Batch work over many frames or networks, each a job with progress, cancel and a typed result:
evaluation, bench, the survey's analysis and its report, robustness, top images."""
