"""Batch fuzzing: falsify many properties of one network in one tensor batch.

Modules: :mod:`~certify.fuzz.options` (frozen options), :mod:`~certify.fuzz.objective`
(padded boxes and unsafe sets, the margin), :mod:`~certify.fuzz.strategies` (mutations),
:mod:`~certify.fuzz.pool` (seed pools and energy), :mod:`~certify.fuzz.rng` (random numbers),
:mod:`~certify.fuzz.stack` (networks of one structure as one), :mod:`~certify.fuzz.batch` (the fuzzer),
:mod:`~certify.fuzz.group` (several networks under one budget).
"""

from __future__ import annotations

from certify.fuzz.batch import BatchFuzzer, FuzzOutcome, FuzzStats, fuzz_many
from certify.fuzz.group import fuzz_grouped, fuzz_instances, group_by_network, group_by_structure
from certify.fuzz.options import FuzzOptions, StrategyWeights

__all__ = ["BatchFuzzer", "FuzzOptions", "FuzzOutcome", "FuzzStats", "StrategyWeights", "fuzz_grouped",
           "fuzz_instances", "fuzz_many", "group_by_network", "group_by_structure"]
