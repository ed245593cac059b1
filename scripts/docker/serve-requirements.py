"""The serving image's requirements: pyproject's base dependencies with ONE model runtime, the bundle's.

The bundle's ``default_backend`` (models/model.json) says which runtime runs it: OpenVINO or ONNX Runtime.
Both run the fp32 ONNX file and the server falls back to whichever is installed, so the image carries
only one (~80-100 MB each): ``python3 serve-requirements.py pyproject.toml models/model.json``.
"""

import json
import sys
import tomllib

pyproject, model_json = sys.argv[1:3]
with open(pyproject, "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
with open(model_json) as f:
    backend = json.load(f).get("default_backend") or "onnx"
drop = "onnxruntime" if backend.startswith("openvino") else "openvino"
print("\n".join(d for d in deps if d.split("==")[0].strip() != drop))
