"""Deploy: INT8 TFLite export and its validation (bytes, MACs, accuracy, agreement with float)."""

from asc_search.deploy._bundle import choose_exports, export_and_validate, export_front
from asc_search.deploy._export import ExportError, export_int8_tflite
from asc_search.deploy._validate import TFLiteComplexity, run_int8, tflite_complexity

__all__ = [
    "ExportError",
    "TFLiteComplexity",
    "choose_exports",
    "export_and_validate",
    "export_front",
    "export_int8_tflite",
    "run_int8",
    "tflite_complexity",
]
