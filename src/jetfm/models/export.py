"""ONNX export of a jet model that maps padded particles to outputs: ``(x (B, N, F), mask (B, N))``.

Both the batch size B and the multiplicity N are dynamic axes, so one exported file serves any batch
and any jet length. The mask is exported as a ``bool`` input (True = real particle), exactly the
convention of the PyTorch models. The exporter used is TorchScript-based (``dynamo=False``): it
lowers ``scaled_dot_product_attention`` with a boolean mask to plain MatMul/Softmax/Where nodes
(opset >= 17), which onnxruntime runs on any provider; :func:`check_onnx` compares the file with
PyTorch on a batch of another size and length than the export example.

Shapes: B jets, N particles, F features.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jetfm.core.atomic import atomic_path
from jetfm.core.errors import InputError


def example_inputs(
    n_features: int, batch: int = 3, n_particles: int = 7, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random standardised features (B, N, F) and a ragged mask (B, N) with one padded slot or more."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_particles, n_features, generator=g)
    lengths = torch.randint(1, n_particles, (batch,), generator=g)
    lengths[0] = n_particles  # one full jet
    mask = torch.arange(n_particles)[None] < lengths[:, None]
    return x * mask[..., None], mask


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    n_features: int,
    output_names: Sequence[str] = ("logits", "probs"),
    opset: int = 17,
) -> Path:
    """Export ``model(x, mask) -> outputs`` to ONNX with dynamic batch and particle axes.

    Writes atomically and returns ``path``. ``model`` is put in eval mode.
    """
    if opset < 17:
        raise InputError("opset >= 17 (LayerNorm as one op)", field="opset", found=opset)
    path = Path(path)
    model = model.eval()
    x, mask = example_inputs(n_features)
    dynamic = {"x": {0: "batch", 1: "particles"}, "mask": {0: "batch", 1: "particles"}}
    for name in output_names:
        dynamic[name] = {0: "batch"}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # TorchScript tracing warns about Python bools taken from tensors (mask.any() guards);
        # the traced graph keeps the tensor ops, which check_onnx verifies on other shapes
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            model,
            (x, mask),
            str(tmp),
            input_names=["x", "mask"],
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    return path


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    n_features: int,
    batch: int = 5,
    n_particles: int = 11,
    atol: float = 1e-4,
) -> float:
    """Largest absolute difference between onnxruntime and PyTorch outputs on a fresh batch.

    Raises InputError if it exceeds ``atol``.
    """
    import onnxruntime as ort

    x, mask = example_inputs(n_features, batch=batch, n_particles=n_particles, seed=1)
    with torch.no_grad():
        ref = model.eval()(x, mask)
    ref = ref if isinstance(ref, tuple | list) else (ref,)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy(), "mask": mask.numpy()})
    diff = max(float(np.max(np.abs(g - r.numpy()))) for g, r in zip(got, ref, strict=True))
    if not diff <= atol:
        raise InputError(
            f"ONNX outputs within {atol} of PyTorch", file=path, field="outputs", found=diff
        )
    return diff
