"""Top-level commands beyond `run` (demo, predict, report), one module each."""
