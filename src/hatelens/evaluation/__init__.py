"""Evaluation: run a classifier over a dataset into a run folder; metrics, thresholds, calibration,
comparison of two runs and success criteria."""
