"""The run: config, the trainer loop, checkpoints, loggers, the agent registry, comparisons
and the command line."""
