"""This project against the reference design: training step, sweep,
latency and batched early exit, measured side by side."""
from branchynet.bench.benchmark import NETWORKS, PROFILES  # noqa
