"""An exported ONNX file run by ONNX Runtime, wrapped to look like a reference model.

:class:`OnnxRuntimeModel` has the ``num_frames``, ``scale`` and ``output_mode`` that
:func:`reference_models.inference.upscale.upscale_frames` needs (read from the file's ``metadata_props``) and a
``forward`` taking and returning tensors, so ``run --backend onnxruntime`` uses the same windows, tiles and
video I/O as the PyTorch models.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from reference_models.export.metadata import parse_metadata
from vsrblocks.shapes import check_shape

__all__ = ["OnnxRuntimeModel"]


class OnnxRuntimeModel(nn.Module):
    """An ONNX file written by :func:`~reference_models.export.onnx.export_onnx`, run by ONNX Runtime on CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (``None``: ONNX Runtime's default, one per core).

    Shape:
        - lr: ``(B, T, 3, H, W)`` with ``T = num_frames``, float
        - Output: ``(B, 3, sH, sW)`` (``output_mode="center"``) or ``(B, T, 3, sH, sW)`` (``"all"``), float32

    Raises:
        ValueError: the file is not an ONNX model, or it lacks this package's metadata.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        where = f"'{os.fspath(path)}'"
        if not os.path.isfile(path):
            raise ValueError(f"{where} does not exist")
        try:
            self.session = onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{where} is not a readable ONNX model: {' '.join(str(exc).split())[:300]}") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.num_frames, self.scale, self.output_mode = parse_metadata(metadata, where)
        self.metadata = dict(metadata)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        check_shape(lr, "B T C H W", name="lr", T=self.num_frames, C=3)
        array = np.ascontiguousarray(lr.detach().to("cpu", torch.float32).numpy())
        (out,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(out).to(lr.device)

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, scale={self.scale}, output_mode={self.output_mode!r}"
