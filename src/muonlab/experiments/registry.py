"""Names of the experiments that ``muonlab run NAME`` knows, mapped to "module:function".

Each function has the signature ``run(args: argparse.Namespace) -> dict`` and writes its results
(results.json, PNG plots) under ``args.out``. Imports are lazy so the CLI starts fast.
"""

EXPERIMENTS: dict[str, str] = {
    "lm-compare": "muonlab.experiments.lm_compare:run",
    "qk-clip": "muonlab.experiments.qk_clip:run",
}
