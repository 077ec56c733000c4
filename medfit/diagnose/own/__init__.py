"""Runs medfit trained: what the run directory says (facts), the rules over its history and
config (history_rules), how well the kept weights fit (fit_rules), the checkpoint probes and their
rules (probes, probe_rules), and `run.diagnose_run`, which reads, probes, ranks and saves.

    facts -> history_rules, fit_rules -> probes -> probe_rules -> run

check.json's findings are shared with the foreign wing (diagnose/check_rules.py).
"""
