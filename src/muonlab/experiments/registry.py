"""Names of the experiments that ``muonlab run NAME`` knows, mapped to "module:function".

Each function has the signature ``run(args: argparse.Namespace) -> dict`` and writes its results
(results.json, PNG plots) under ``args.out``. Imports are lazy so the CLI starts fast.
"""

EXPERIMENTS: dict[str, str] = {
    "matfac": "muonlab.experiments.work_a:run_matfac",
    "matfac-sym": "muonlab.experiments.work_a:run_matfac_sym",
    "icl": "muonlab.experiments.work_a:run_icl",
    "quadreg": "muonlab.experiments.work_b:run_quadreg",
    "logreg": "muonlab.experiments.work_b:run_logreg",
    "completion": "muonlab.experiments.work_b:run_completion",
    "lm-compare": "muonlab.experiments.lm_compare:run",
    "qk-clip": "muonlab.experiments.qk_clip:run",
}
