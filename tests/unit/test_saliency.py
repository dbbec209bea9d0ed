import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskclf.config import ModelCfg
from maskclf.inference.saliency import grad_cam, overlay, panels
from maskclf.labels import AgeBounds
from maskclf.models.heads import attribute_probs, head_spec
from maskclf.models.network import build_model

SIZE = 48


def model_for(backbone: str, head: str = "multihead", age: str = "classes"):
    torch.manual_seed(0)
    spec = head_spec(head, age)
    model = build_model(ModelCfg(backbone=backbone, pretrained="", head=head, age=age), spec.heads).eval()
    return model, spec


def batch(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet", "test_convnext"])
def test_feature_map_path_gives_the_same_outputs_as_the_model(backbone):
    model, _ = model_for(backbone)
    x = batch()
    with torch.no_grad():
        direct = model(x)
        via_map = model.forward_map(model.backbone.forward_features(x))
    for head in direct:
        torch.testing.assert_close(via_map[head], direct[head])


def test_grad_cam_of_a_linear_head_on_average_pooling_is_the_class_activation_map():
    # With global average pooling, d logit_k / d A[c, h, w] = W[k, c] / HW everywhere, so Grad-CAM equals the
    # class activation map ReLU(sum_c W[k, c] A[c]) up to the per-image scale that the [0, 1] maps remove.
    model, spec = model_for("test_resnet")
    x = batch()
    sal = grad_cam(model, spec, x, SIZE)
    with torch.no_grad():
        features = model.backbone.forward_features(x)
        outputs = model(x)
    for head in ("mask", "gender", "age"):
        k = outputs[head].argmax(1)
        np.testing.assert_array_equal(sal.values[head], k.numpy())
        weights = model.heads[head].weight[k]  # (N, C)
        cam = F.relu(torch.einsum("nc,nchw->nhw", weights, features))[:, None]
        cam = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.flatten(1).amax(1)[:, None, None]
        np.testing.assert_allclose(sal.maps[head], cam.detach().numpy(), atol=1e-5)
        assert sal.maps[head].shape == (3, SIZE, SIZE) and sal.maps[head].max() == pytest.approx(1.0)
    assert not np.allclose(sal.maps["mask"], sal.maps["gender"])  # each head gets its own map


@pytest.mark.parametrize("head,age", [("single", "classes"), ("multihead", "bins"), ("multihead", "regression")])
def test_every_head_layout_explains_mask_gender_and_age(head, age):
    model, spec = model_for("test_resnet", head, age)
    x = batch()
    sal = grad_cam(model, spec, x, SIZE)
    with torch.no_grad():
        probs = attribute_probs(model(x), spec)
    assert set(sal.maps) == {"mask", "gender", "age"}
    for attr, p in probs.items():
        np.testing.assert_array_equal(sal.values[attr], p.argmax(1).numpy())
        np.testing.assert_allclose(sal.probs[attr], p.max(1).values.numpy(), rtol=1e-5)
        assert np.isfinite(sal.maps[attr]).all() and 0.0 <= sal.maps[attr].min() <= sal.maps[attr].max() <= 1.0


def test_a_chosen_value_is_explained_instead_of_the_prediction():
    model, spec = model_for("test_resnet")
    x = batch()
    predicted = grad_cam(model, spec, x, SIZE)
    other = {"mask": torch.from_numpy((predicted.values["mask"] + 1) % 3)}
    chosen = grad_cam(model, spec, x, SIZE, values=other)
    assert set(chosen.maps) == {"mask"}
    np.testing.assert_array_equal(chosen.values["mask"], other["mask"].numpy())
    assert not np.allclose(chosen.maps["mask"], predicted.maps["mask"])


def test_a_backbone_without_spatial_feature_maps_is_refused_by_name():
    model, spec = model_for("test_vit")
    with pytest.raises(ValueError, match=r"CNN backbone.*\(N, C, H, W\)"):
        grad_cam(model, spec, torch.randn(1, 3, 160, 160), 160)


def test_overlay_and_panels_show_each_head_beside_the_crop():
    crop = np.full((SIZE, SIZE, 3), 128, np.uint8)
    cam = np.zeros((SIZE, SIZE))
    cam[:, SIZE // 2:] = 1.0
    blended = overlay(crop, cam)
    assert blended.dtype == np.uint8 and blended.shape == crop.shape
    assert blended[0, -1, 0] > blended[0, -1, 2]  # hot half: red in the jet colours
    assert blended[0, 0, 2] > blended[0, 0, 0]  # cold half: blue
    model, spec = model_for("test_resnet")
    sal = grad_cam(model, spec, batch(2), SIZE)
    images, titles = panels(np.stack([crop, crop]), sal, AgeBounds(), ["a", "b"])
    assert images.shape == (8, SIZE, SIZE, 3)
    assert titles[0] == "a" and titles[4] == "b" and titles[1].startswith("mask: ") and titles[3].startswith("age: ")
