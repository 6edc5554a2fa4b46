"""Callbacks, one job each: dashboards, the learning rate, predictions to CSV, and the CLI's run helpers."""
