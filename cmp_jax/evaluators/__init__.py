"""Evaluators: built from a config, `run(variables)` yields `(name, value)` pairs (big_vision style)."""
