"""Benchmarks: each scenario measured against its baseline in the same run, as ratios.

Run with ``make bench`` (or ``python -m benchmarks``); results go to benchmarks/results/.
"""
