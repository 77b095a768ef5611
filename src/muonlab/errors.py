"""Errors shared across the layers (a leaf module: it imports nothing from muonlab).

Any layer may raise :class:`CLIError` for a bad command-line input; ``muonlab.cli.main`` turns it into one line on
stderr and exit code 2. Keeping it here lets the commands of lower layers (bench, tasks, experiments) raise it without
importing the top-level command line.
"""


class CLIError(Exception):
    """A user error at the command line: printed as one line, exit code 2."""
