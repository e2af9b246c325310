"""Deployment of the reference models: ONNX (run by ONNX Runtime), ``torch.export`` programs and TorchScript."""

from reference_models.export.exported_program import InferenceModel, export_program, load_program, save_program
from reference_models.export.onnx import export_onnx
from reference_models.export.onnx_runtime import OnnxRuntimeModel
from reference_models.export.torchscript import export_torchscript, load_torchscript

__all__ = [
    "InferenceModel",
    "OnnxRuntimeModel",
    "export_onnx",
    "export_program",
    "export_torchscript",
    "load_program",
    "load_torchscript",
    "save_program",
]
