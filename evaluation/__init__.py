"""Evaluation: image-quality metrics, the classical baselines HGM is compared against, and the metrics.csv report."""
