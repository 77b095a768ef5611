"""The tasks layer: problems to train on (matrix factorization, in-context regression, work B's matrix problems) and
the LM trainer (``tasks.lm``)."""
