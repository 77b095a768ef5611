"""The LM trainer's error, in a leaf module: the trainer (train.py) and its checkpoints (checkpoint.py) both raise
it without importing each other. ``muonlab.tasks.lm.train`` re-exports it, where callers import it from."""


class TrainError(ValueError):
    """A bad training configuration or checkpoint; the message says what to change."""
