"""Model factory, shapes and the seed's parameter count."""

from __future__ import annotations

import pytest
import torch

from catsdogs.core.config import MODEL_NAMES, load_params
from catsdogs.models.architectures import MODELS, SimpleCNN, count_parameters, create_model


def test_simple_cnn_matches_the_seed():
    model = create_model("simple_cnn")
    assert isinstance(model, SimpleCNN)
    assert count_parameters(model) == 422_530
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 32, (3, 3)),
        (32, 64, (3, 3)),
        (64, 128, (3, 3)),
        (128, 256, (3, 3)),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 4
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 4
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(256, 128), (128, 2)]
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in model.modules())


def test_params_know_exactly_the_registered_models(tmp_path):
    """params.yaml is validated without torch, from MODEL_NAMES: it must name the registry's models, no more."""
    assert sorted(MODEL_NAMES) == sorted(MODELS)
    for name in MODELS:
        f = tmp_path / f"{name}.yaml"
        f.write_text(f"model: {{name: {name}}}")
        assert load_params(f).model.name == name


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [64, 128, 224])
def test_output_shape(name, size):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, 2)
    assert torch.isfinite(out).all()


@pytest.mark.heavy  # a real training step of each architecture: seconds to tens of seconds on 2 busy cores
@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_step_reduces_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4)  # every model pools globally: any size works
    # Adam, as training uses: plain SGD at a fixed rate diverges on the deep EfficientNet from scratch
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        create_model("vgg")


def test_flip_tta_is_mirror_invariant_and_exports_to_onnx(tmp_path):
    import numpy as np

    from catsdogs.models.serving import FlipTTA, with_tta
    from catsdogs.release.export import export_onnx, ort_proba, ort_session

    torch.manual_seed(0)
    base = create_model("simple_cnn").eval()
    assert with_tta(base, "none") is base
    tta = with_tta(base, "flip")
    assert isinstance(tta, FlipTTA) and count_parameters(tta) == count_parameters(base)
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(tta(x), tta(x.flip(-1)), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(base(x), base(x.flip(-1)), atol=1e-4)
        expected = torch.softmax(tta(x), dim=1).numpy()
    export_onnx(tta, tmp_path / "m.onnx", 48, opset=18)
    np.testing.assert_allclose(ort_proba(ort_session(tmp_path / "m.onnx"), x.numpy()), expected, atol=1e-5)
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        with_tta(base, "rotate")
