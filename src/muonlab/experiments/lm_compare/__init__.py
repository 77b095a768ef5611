"""``muonlab run lm-compare``: work D's optimizer ranking (docs/math.md §5.3) on a small GPT, plus AdamW, Muon, PolarGrad.

Every optimizer trains the same model on the same batches (equal tokens) for each lr of a sweep around its default
(``DEFAULT_LR`` × ``LR_GRID``); its best run by final validation loss represents it. The sweep *brackets* the best:
when an optimizer's best lr is the smallest (largest) it tried, the grid is extended on that side by ÷2 (×2), up to
``max_extensions`` times per side; a best still at an edge after that is marked in the table.

``jobs`` runs go at once (processes; on CPU one torch thread each, on CUDA sharing the one GPU). Each run lives in
``runs/OPTIMIZER_lrLR/`` of the output: a run killed midway resumes from its checkpoint, a finished one is reused
(its ``summary.json``) when the same command runs again. Written under ``Options.out``: ``results.json`` (the payload :func:`run`
returns, written by the experiment registry: every run, with its wall-clock and training time), ``table.md`` (per optimizer: best final validation loss, steps and training
time to reach tuned AdamW's final validation loss with the ratios to AdamW, our rank next to work D's),
``curves.png`` (validation curves of the best runs).

Time to the target = the interpolated step at which the validation curve first reaches it × the run's mean
training time per step (``train_time_s / steps``: forward, backward and optimizer step, evaluation excluded).

The package: ``options.py`` (:class:`Options` as asked, :class:`Settings` as run: the API, no argparse Namespace
below :func:`run`), ``sweep.py`` (lr grids and their bracketing, one run with its reuse and resume, the pool, the
interleaved step timing), ``table.py`` (the rows and the Markdown), ``plots.py``, ``experiment.py`` (:func:`run`,
the replay of a finished sweep).
"""

from muonlab.experiments.lm_compare.experiment import committed_results, replay, run
from muonlab.experiments.lm_compare.options import (BATCH, DEFAULT_OPTIMIZERS, LR_GRID, MAX_EXTENSIONS, VARIANTS,
                                                    LMCompareError, Options, Settings, command, default_lr,
                                                    parse_optimizers, train_settings)
from muonlab.experiments.lm_compare.plots import plot_curves
from muonlab.experiments.lm_compare.sweep import (KEEP, best_run, edge_of, extension_lr, measure_step_costs,
                                                  run_dir_name, score, sweep)
from muonlab.experiments.lm_compare.table import (LABELS, WORK_D, build_table, markdown_table, seconds_per_step,
                                                  spearman, steps_to_reach)

__all__ = ["BATCH", "DEFAULT_OPTIMIZERS", "KEEP", "LABELS", "LMCompareError", "LR_GRID", "MAX_EXTENSIONS", "Options",
           "Settings", "VARIANTS", "WORK_D", "best_run", "build_table", "command", "committed_results", "default_lr",
           "edge_of", "extension_lr", "markdown_table", "measure_step_costs", "parse_optimizers", "plot_curves",
           "replay", "run", "run_dir_name", "score", "seconds_per_step", "spearman", "steps_to_reach", "sweep",
           "train_settings"]
