"""Sweeps and hyperparameter search on Optuna: the sweep file, the study, its workers, each trial's runs, the tables."""
