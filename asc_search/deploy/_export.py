"""Full-integer INT8 TFLite export: PyTorch -> ONNX -> onnx2tf (per-channel, int8 input and output).

The path measured in RECIPES.md: ``torch.onnx.export(dynamo=False, opset 18)``; calibration data from
the training split in NHWC; ``onnx2tf.convert(output_integer_quantized_tflite=True, quant_type=
"per-channel", input/output int8)``. onnx2tf calls the ``onnxsim`` program, so the interpreter's
``bin`` folder is put on ``PATH`` first (otherwise simplification is skipped silently).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asc_search._errors import AscSearchError

log = logging.getLogger(__name__)


class ExportError(AscSearchError):
    """The conversion to INT8 TFLite failed."""


def _ensure_tools_on_path() -> None:
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


@contextlib.contextmanager
def _redirect_fds(path: Path):
    """Send this process's stdout and stderr file descriptors (TensorFlow's C++ logging) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def export_int8_tflite(model: nn.Module, calibration: np.ndarray, out_path: str | Path) -> Path:
    """Export ``model`` to a full-integer INT8 TFLite file.

    Args:
        model: ``(batch, channels, n_bins, frames) -> (batch, n_classes)``; exported in eval mode (batch-norm
            folded by the exporters).
        calibration: Representative dataset, shape ``(n, channels, n_bins, frames)`` float32, normalised
            exactly as the model's inputs (take it from the training split).
        out_path: Destination ``.tflite`` (written atomically).

    Returns:
        ``out_path``. The file's input is int8 ``[1, n_bins, frames, channels]`` (NHWC), its output int8
        ``[1, n_classes]`` logits.

    Raises:
        ExportError: ONNX export or conversion failed (the message carries the converter's error).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _ensure_tools_on_path()
    with _redirect_fds(Path(tempfile.gettempdir()) / "asc_search_tf_import.log"):
        import onnx2tf  # heavy (TensorFlow): import only when exporting

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with tempfile.TemporaryDirectory(prefix="asc_export_") as tmp:
        tmp_path = Path(tmp)
        onnx_path = tmp_path / "model.onnx"
        example = torch.from_numpy(calibration[:1].astype(np.float32))
        try:
            torch.onnx.export(model, (example,), str(onnx_path), input_names=["input"], output_names=["logits"],
                              opset_version=18, dynamo=False)
        except Exception as exc:  # noqa: BLE001 - surface the exporter's message
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
        calib_path = tmp_path / "calib_nhwc.npy"
        nhwc = calibration.transpose(0, 2, 3, 1).astype(np.float32)
        np.save(calib_path, nhwc)
        channels = calibration.shape[1]
        mean, std = np.zeros((1, 1, 1, channels)), np.ones((1, 1, 1, channels))
        out_dir = tmp_path / "tf"
        log_path = tmp_path / "onnx2tf.log"
        # onnx2tf treats a 3-channel input as an image and fetches sample images from the internet for its
        # self-check unless a file of that name is in the working directory: give it our calibration data.
        np.save(tmp_path / "calibration_image_sample_data_20x128x128x3_float32.npy", np.resize(nhwc, (20,) + nhwc.shape[1:]))
        cwd = os.getcwd()
        try:
            os.chdir(tmp_path)
            with _redirect_fds(log_path):
                onnx2tf.convert(
                    input_onnx_file_path=str(onnx_path), output_folder_path=str(out_dir),
                    output_integer_quantized_tflite=True, quant_type="per-channel",
                    custom_input_op_name_np_data_path=[["input", str(calib_path), mean, std]],
                    input_quant_dtype="int8", output_quant_dtype="int8", non_verbose=True,
                )
        except BaseException as exc:  # onnx2tf calls sys.exit on some failures
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ExportError(f"onnx2tf failed: {type(exc).__name__}: {exc}; {_tail(log_path)}") from exc
        finally:
            os.chdir(cwd)
        produced = sorted(out_dir.glob("*_full_integer_quant.tflite"))
        if not produced:
            raise ExportError(f"onnx2tf wrote no *_full_integer_quant.tflite; output: {_tail(log_path)}")
        tmp_out = out_path.with_name(f".{out_path.name}.tmp")
        shutil.copyfile(produced[0], tmp_out)
        os.replace(tmp_out, out_path)
    return out_path
