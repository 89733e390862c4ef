"""Evaluation: image-quality metrics and the metrics.csv report (the methods compared against: classical/)."""
