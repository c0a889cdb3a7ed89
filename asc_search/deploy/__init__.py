"""Deploy: INT8 TFLite export and its validation (bytes, MACs, accuracy, agreement with float)."""

from asc_search.deploy._bundle import choose_exports, export_and_validate, export_front
from asc_search.deploy._deploy import (
    DeployFrontend,
    TargetBudgetError,
    evaluate_model_dir,
    export_frontend_tflite,
    make_bundle,
)
from asc_search.deploy._ensemble import export_ensemble
from asc_search.deploy._export import ExportError, export_int8_tflite
from asc_search.deploy._limits import (
    MIN_INT8_AGREEMENT,
    LimitCheck,
    check_limits,
    describe_failures,
    ensemble_measured,
    measured_from_validation,
)
from asc_search.deploy._tflm import (
    TFLMError,
    litert_latency_ms,
    run_int8_tflm,
    tflm_arena_bytes,
    tflm_runs_with,
    write_c_array,
)
from asc_search.deploy._validate import TFLiteComplexity, run_int8, tflite_complexity

__all__ = [
    "DeployFrontend",
    "evaluate_model_dir",
    "export_frontend_tflite",
    "make_bundle",
    "ExportError",
    "LimitCheck",
    "MIN_INT8_AGREEMENT",
    "TargetBudgetError",
    "check_limits",
    "describe_failures",
    "ensemble_measured",
    "measured_from_validation",
    "TFLMError",
    "TFLiteComplexity",
    "choose_exports",
    "export_and_validate",
    "export_ensemble",
    "export_front",
    "export_int8_tflite",
    "litert_latency_ms",
    "run_int8_tflm",
    "run_int8",
    "tflite_complexity",
    "tflm_arena_bytes",
    "tflm_runs_with",
    "write_c_array",
]
