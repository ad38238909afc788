"""The `drillbook` command: one module per command or small family, `main.py` with the exit contract.

Nothing in drillbook imports this package: it parses arguments, loads the
catalogue once, calls flows or tasks, and prints.
"""
