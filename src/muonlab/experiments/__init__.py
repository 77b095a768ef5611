"""The experiments layer: ``muonlab run NAME`` and ``muonlab reproduce``.

- ``registry.py``: experiment names → ``run(args) -> dict`` functions, and :func:`registry.execute` (run one by name).
- ``kappa_sweeps.py``: work A's κ-sweeps (matrix factorization, in-context linear regression);
  ``polargrad_problems.py``: work B's matrix problems (quadratic and logistic regression, matrix completion);
  ``lm_compare/`` (options, sweep, table, plots), ``qk_clip.py``: the language-model lab (work D's ranking, work C's
  QK-Clip).
- ``*_report.py``: each of those works' sections of the reproduce report, next to its experiment;
  ``claims.py``: the section and claim types they share; ``report.py``: runs the sections and writes report.md.
- ``runner.py`` (step-size grids, one run), ``plots.py``, ``cli.py``; result folders are written through
  :mod:`muonlab.files`.

Imports go one way: cli → report → (sections → claims), and cli, report → registry → experiments (the layer order:
the package docstring of :mod:`muonlab`).
"""
