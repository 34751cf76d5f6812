"""The local runner: every platform's plan as subprocesses on this machine (runner.py)."""
