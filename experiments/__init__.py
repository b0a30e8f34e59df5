"""The studies (paper reproductions and case studies): run from the repository root as
``python -m experiments.NAME``; results go to ``experiments/results/``."""
