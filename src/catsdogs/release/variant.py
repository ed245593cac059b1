"""Release a model trained beside the shipped one (the student, the teacher) into its own folders.

The same calibrate -> evaluate -> export -> robustness steps as the main DVC stages, with the model's
own ``train.output_dir`` (checkpoint, calibration, test report, robustness) and ``export.output_dir``
(its servable bundle), so that it is served and judged exactly like the shipped model.
"""

from __future__ import annotations

import json
from typing import Any

from catsdogs.core.config import Params


def release_variant(sp: Params) -> dict[str, Any]:
    """Calibrate, evaluate, export and stress the checkpoint in ``sp.train.output_dir``; their reports."""
    from catsdogs.release.calibrate import run_calibration
    from catsdogs.release.evaluate import run_evaluation
    from catsdogs.release.export import run_export
    from catsdogs.release.robustness import run_robustness

    out, bundle = sp.path(sp.train.output_dir), sp.path(sp.export.output_dir)
    run_calibration(sp, checkpoint=out / "best.pt")
    metrics = run_evaluation(sp, checkpoint=out / "best.pt", output=out / "metrics.json")
    run_export(sp, checkpoint=out / "best.pt", output_dir=bundle, metrics_file=out / "metrics.json")
    robust = run_robustness(sp, model_dir=bundle, output=out / "robustness.json")
    meta = json.loads((bundle / "model.json").read_text())
    return {"metrics": metrics, "robustness": robust, "meta": meta}
