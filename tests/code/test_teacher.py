"""The teacher's params: the shipped model's recipe with only the tuned blocks and the folders changed."""

from __future__ import annotations

from catsdogs.core.config import load_params
from catsdogs.release.teacher import teacher_params


def test_teacher_params_change_only_the_tuned_blocks_and_the_folders() -> None:
    params = load_params(overrides={"model.tuned_blocks": 1})
    tp = teacher_params(params)
    assert tp.model.tuned_blocks == params.teacher.tuned_blocks == 3
    assert tp.train.output_dir == params.teacher.output_dir and tp.export.output_dir == params.teacher.bundle_dir
    # the folders differ, so the teacher never overwrites the shipped checkpoint or bundle
    assert tp.path(tp.train.output_dir) != params.path(params.train.output_dir)
    assert tp.path(tp.export.output_dir) != params.path(params.export.output_dir)
    same = ("data", "train", "inference", "calibration", "evaluation", "gate", "distill")
    for section in same:
        mine, theirs = getattr(tp, section).model_dump(), getattr(params, section).model_dump()
        if section == "train":
            mine.pop("output_dir"), theirs.pop("output_dir")
        assert mine == theirs, section
    assert tp.model.model_dump(exclude={"tuned_blocks"}) == params.model.model_dump(exclude={"tuned_blocks"})
    assert tp.export.model_dump(exclude={"output_dir"}) == params.export.model_dump(exclude={"output_dir"})
    assert params.model.tuned_blocks == 1  # the original is left as it was
