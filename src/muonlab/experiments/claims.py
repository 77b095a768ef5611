"""The pieces of a ``muonlab reproduce`` report section: a claim row, a section's result and the section itself.

A leaf of the experiments package: the report (``experiments/report.py``) renders sections, and each work's section
lives next to its experiment (``kappa_sweeps_report.py``, ``polargrad_problems_report.py``, ``lm_report.py``) and
imports only this module, so nothing imports the report back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Claim:
    """One row of the report: a claim of a source work, checked against our measurement."""

    claim: str  # one sentence
    source: str  # the source's number or statement
    ours: str  # our measurement
    holds: str  # "yes", "no", "partly"


@dataclass
class SectionResult:
    """What a section's ``summarize`` returns: its claim rows, its plots and a free-text note."""

    claims: list[Claim]
    plots: list[str]  # paths relative to the report directory
    notes: str = ""


@dataclass
class Section:
    """A part of the report: the experiments it runs (``settings``) and how it reads their payloads (``summarize``)."""

    name: str
    title: str
    experiments: list[str]
    settings: Callable[[bool], dict[str, dict]]  # quick -> {experiment: argument overrides}
    summarize: Callable[[dict[str, dict], bool], SectionResult]
    source: str = ""
