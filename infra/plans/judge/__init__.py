"""Judging plans: the destructive-change guard and its reviewed allowances, the drift report,
each stack's outcome and the markdown report the verdicts end in."""
