"""Runners: what `main.py --runner NAME` runs (training, restoration) and the plumbing they share."""
