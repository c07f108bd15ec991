"""Settings before any compute: the schema of a composed config, and the command-line checks that run
before Hydra creates a run folder."""
