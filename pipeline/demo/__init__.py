"""The demo dataset: expression videos generated from real face photos (`pipeline.demo.generate.generate_demo`).

Nothing is imported here: a stage that reads one demo module (int8 calibration reads the face photos
through `assets`) does not depend on the generator's code (`pipeline/registry.py`, code deps)."""
