"""Runs: the run-folder layout and claiming, best/last resolution, and each run's recipe."""
