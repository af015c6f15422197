"""Workflows over whole runs: method comparisons, roster comparisons and the main pipeline."""
