"""Metrics: a tracker (JSONL + TensorBoard), the console line, plots."""
