"""Run folders as records: the name that identifies a run, resuming it, reading finished runs back for
a report, and the log of checks against released models."""
