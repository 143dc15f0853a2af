"""ONNX export of a fine-tuned tagger: dynamic batch and multiplicity, parity with PyTorch (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from jetfm.core.errors import InputError
from jetfm.data.features import Preprocessing
from jetfm.evaluate.predict import export_classifier
from jetfm.models.backbone import BackboneConfig
from jetfm.tasks.classify import ClassifyConfig, ClassifyTask

BB = BackboneConfig(dim=16, depth=2, heads=2, n_features=3, n_registers=1)


def test_onnx_matches_pytorch_for_any_batch_and_length(
    tmp_path: Path, toy_pre: Preprocessing
) -> None:
    """ParT-style head on a backbone with a register: SDPA with bool masks, B and N dynamic."""
    torch.manual_seed(0)
    task = ClassifyTask(ClassifyConfig(backbone=BB, n_classes=3, class_names=["a", "b", "c"]))
    task.save_pretrained(
        tmp_path / "clf", preprocessing=toy_pre.to_dict(), meta={"task": "classify"}
    )
    path = export_classifier(tmp_path / "clf", tmp_path / "tagger.onnx")
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    inputs = {i.name: i for i in model.graph.input}
    assert inputs["mask"].type.tensor_type.elem_type == onnx.TensorProto.BOOL
    assert Preprocessing.load(tmp_path / "tagger.preprocessing.json").to_dict() == toy_pre.to_dict()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    task.eval()
    g = torch.Generator().manual_seed(5)
    for B, N in ((1, 1), (4, 13), (9, 40)):
        n = torch.randint(1, N + 1, (B,), generator=g)
        mask = torch.arange(N)[None] < n[:, None]
        x = torch.randn(B, N, 3, generator=g) * mask[..., None]
        logits, probs = sess.run(None, {"x": x.numpy(), "mask": mask.numpy()})
        with torch.no_grad():
            ref = task.logits(x, mask)
        assert logits.shape == (B, 3)
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4)
        np.testing.assert_allclose(probs, ref.softmax(-1).numpy(), atol=1e-4)


def test_token_backbones_refuse_export(ntp_model: Path, toy_store: Path, tmp_path: Path) -> None:
    from jetfm.train.finetune import FinetuneConfig, build_classifier, load_pretrained

    parts = load_pretrained(ntp_model)
    clf = build_classifier(FinetuneConfig(pretrained=ntp_model, regime="frozen"), parts, ["a", "b"])
    clf.save_pretrained(
        tmp_path / "clf", preprocessing=parts.preprocessing.to_dict(), meta={"task": "classify"}
    )
    with pytest.raises(InputError, match="sequence"):
        export_classifier(tmp_path / "clf", tmp_path / "x.onnx")
