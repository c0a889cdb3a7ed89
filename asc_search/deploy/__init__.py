"""Deploy: INT8 TFLite export and its validation (bytes, MACs, accuracy, agreement with float), the budget's
pass/fail lines (limits), bundles and validating a model on labelled audio."""

from asc_search.deploy._bundle import (
    SEARCH_MODEL_FILE,
    choose_exports,
    export_and_validate,
    export_front,
    model_to_export,
    write_npy,
)
from asc_search.deploy._deploy import (
    ClipMeans,
    DeployFrontend,
    TargetBudgetError,
    audio_groups,
    evaluate_model_dir,
    export_frontend_tflite,
    load_frontend,
    make_bundle,
    softmax_rows,
)
from asc_search.deploy._ensemble import export_ensemble
from asc_search.deploy._export import OUTPUT_FLOOR_MARGIN, ExportError, export_int8_tflite, raise_output_floor
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
from asc_search.deploy._validate import TFLiteComplexity, litert_interpreter, run_int8, tflite_complexity

__all__ = [
    "ClipMeans",
    "DeployFrontend",
    "ExportError",
    "LimitCheck",
    "MIN_INT8_AGREEMENT",
    "OUTPUT_FLOOR_MARGIN",
    "TFLMError",
    "TFLiteComplexity",
    "TargetBudgetError",
    "audio_groups",
    "check_limits",
    "SEARCH_MODEL_FILE",
    "choose_exports",
    "describe_failures",
    "ensemble_measured",
    "evaluate_model_dir",
    "export_and_validate",
    "export_ensemble",
    "export_front",
    "export_frontend_tflite",
    "model_to_export",
    "export_int8_tflite",
    "litert_interpreter",
    "litert_latency_ms",
    "load_frontend",
    "make_bundle",
    "measured_from_validation",
    "raise_output_floor",
    "run_int8",
    "run_int8_tflm",
    "softmax_rows",
    "tflite_complexity",
    "tflm_arena_bytes",
    "tflm_runs_with",
    "write_c_array",
    "write_npy",
]
