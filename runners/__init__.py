"""Runners: what `main.py --runner NAME` runs."""
