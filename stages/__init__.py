"""One module per pipeline stage; each exposes `run(cfg, *, dataset, ...) -> dict` (a summary)."""
