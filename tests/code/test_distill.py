"""The student's building blocks on constructed inputs with known answers: the distillation loss, the
head fit (it follows the teacher, not only the labels), the grid choice on val, and the student's params."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from catsdogs.core.config import Params, load_params
from catsdogs.release.distill import STUDENT, choose_head, fit_head, kd_loss, student_params


def _blobs(n: int = 400, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian classes, separable along the first feature."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    feats = torch.randn(n, dim, generator=g)
    feats[:, 0] += 3.0 * (2 * labels - 1)
    return feats, labels


def test_kd_loss_is_cross_entropy_without_a_teacher_and_kl_with_one_only() -> None:
    logits, labels = torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([0, 1])
    teacher = torch.softmax(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]) / 2.0, dim=1)
    assert torch.isclose(kd_loss(logits, labels, teacher, 0.0, 2.0), F.cross_entropy(logits, labels))
    kl = (teacher * (teacher.log() - torch.log_softmax(logits / 2.0, dim=1))).sum(1).mean() * 4.0
    assert torch.isclose(kd_loss(logits, labels, teacher, 1.0, 2.0), kl)
    # a student that already matches the teacher at tau has nothing left to learn from it
    same = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    assert kd_loss(same, labels, teacher, 1.0, 2.0).abs() < 1e-6


def test_head_fit_learns_the_labels() -> None:
    feats, labels = _blobs()
    uniform = torch.full((len(labels), 2), 0.5)
    weight, bias = fit_head(feats, labels, uniform, alpha=0.0, tau=2.0, l2=1e-3)
    accuracy = ((feats @ weight.T + bias).argmax(1) == labels).float().mean()
    assert accuracy > 0.97


def test_head_fit_follows_the_teacher_when_alpha_is_one() -> None:
    # The teacher disagrees with the labels on every image: with alpha = 1 the student must side with it.
    feats, labels = _blobs()
    teacher = F.one_hot(1 - labels, 2).float() * 0.9 + 0.05
    weight, bias = fit_head(feats, labels, teacher, alpha=1.0, tau=1.0, l2=1e-3)
    agree = ((feats @ weight.T + bias).argmax(1) == 1 - labels).float().mean()
    assert agree > 0.97


def test_head_choice_is_the_lowest_val_loss_of_the_whole_grid() -> None:
    feats, labels = _blobs()
    teacher = F.one_hot(labels, 2).float() * 0.98 + 0.01
    params = Params(distill={"alpha": [0.0, 1.0], "l2": [1e-4, 10.0]})
    val_feats, val_labels = _blobs(seed=1)
    best, rows, (weight, bias) = choose_head((feats, labels, teacher), (val_feats, val_labels.numpy()), params)
    assert len(rows) == 4 and {(r["alpha"], r["l2"]) for r in rows} == {
        (0.0, 1e-4),
        (0.0, 10.0),
        (1.0, 1e-4),
        (1.0, 10.0),
    }
    assert best["val_loss"] == min(r["val_loss"] for r in rows)
    assert best["l2"] == 1e-4  # a huge penalty shrinks the head towards 50/50 answers
    probs = torch.softmax(val_feats @ weight.T + bias, dim=1).numpy()
    assert np.isclose(
        -np.log(probs[np.arange(len(val_labels)), val_labels.numpy()]).mean(), best["val_loss"], atol=1e-4
    )


def test_student_params_override_only_the_student() -> None:
    params = load_params()
    sp = student_params(params)
    d = params.distill
    assert (sp.model.name, sp.model.image_size, sp.model.tuned_blocks) == (STUDENT, d.image_size, 0)
    assert sp.model.pretrained  # also under a from-scratch teacher: the student's normalisation is ImageNet's
    assert student_params(
        params.model_copy(update={"model": params.model.model_copy(update={"pretrained": False})})
    ).model.pretrained
    assert sp.inference.image_size is None
    assert sp.train.output_dir == d.output_dir and sp.export.output_dir == d.bundle_dir
    assert not sp.export.quantize
    # the teacher's settings are untouched, and everything else is shared
    assert params.model.image_size != d.image_size or params.model.tuned_blocks != 0
    assert params.train.output_dir != sp.train.output_dir
    assert sp.data == params.data and sp.evaluation == params.evaluation and sp.gate == params.gate


@pytest.mark.parametrize("alpha", [[-0.1], [1.5]])
def test_alpha_outside_zero_one_is_refused(alpha: list[float]) -> None:
    with pytest.raises(ValidationError, match="alpha"):
        Params(distill={"alpha": alpha})
