"""Evaluation of candidate index versions (golden sets, metrics, data-quality checks)."""
