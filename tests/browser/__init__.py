"""Browser end-to-end drivers (run in a network namespace by netns.py)."""
