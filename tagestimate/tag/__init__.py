"""The tag wing: planning a run, tagging and writing items, backends, the local and Ray engines
(multiinference.py)."""
