"""Command-line scripts behind the README: demo, baselines, tables, benchmark, tuning, prior export."""
