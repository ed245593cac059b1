"""Release stage: calibrate, evaluate, export the bundle, gate it, test its robustness, card and distil it."""
