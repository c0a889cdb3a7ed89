"""Validation of an INT8 TFLite model with the LiteRT interpreter: bytes, MACs, accuracy, agreement."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asc_search._errors import UserInputError

log = logging.getLogger(__name__)

_WEIGHTED_OPS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense"}


@dataclass(frozen=True, kw_only=True)
class TFLiteComplexity:
    """Complexity counted on the exported graph.

    Args:
        weight_bytes: Bytes of the weight and bias tensors of conv / depthwise / dense ops.
        int8_weights: INT8 weight elements.
        int32_biases: INT32 bias elements.
        macs_per_patch: MACs of conv / depthwise / dense ops for one input.
        file_bytes: Size of the .tflite file.
    """

    weight_bytes: int
    int8_weights: int
    int32_biases: int
    macs_per_patch: int
    file_bytes: int


def litert_interpreter(path: str | Path, *, xnnpack: bool = True):
    """A LiteRT interpreter of the ``.tflite`` at ``path``, 1 thread, tensors allocated: XNNPACK (``xnnpack``) or
    LiteRT's builtin reference kernels (what TFLite-Micro's kernels follow)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=resolver)
    try:
        it.allocate_tensors()
    except RuntimeError as exc:
        if not xnnpack or "XNNPack" not in str(exc):
            raise
        # XNNPACK refuses some quantisation parameters (e.g. a requantisation scale out of its range, as a layer
        # whose outputs collapsed after training gives); LiteRT's builtin int8 kernels run the same graph.
        log.warning("%s: the XNNPACK delegate cannot prepare this model (%s); using LiteRT's builtin kernels",
                    path, str(exc).strip())
        return litert_interpreter(path, xnnpack=False)
    return it


def xnnpack_prepares(path: str | Path) -> bool:
    """Whether LiteRT's XNNPACK delegate can prepare the model (else the builtin int8 kernels run it)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=OpResolverType.AUTO)
    try:
        it.allocate_tensors()
    except RuntimeError:
        return False
    return True


def tflite_complexity(path: str | Path) -> TFLiteComplexity:
    """Count weight bytes and MACs on the ``.tflite`` graph itself.

    Raises:
        UserInputError: The file is not a TFLite model.
    """
    try:
        it = litert_interpreter(path, xnnpack=False)
    except Exception as exc:  # noqa: BLE001
        raise UserInputError(f"{path} is not a readable TFLite model ({exc})") from exc
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    w8 = b32 = wbytes = macs = 0
    for op in it._get_ops_details():  # noqa: SLF001 - the public API lists no op graph
        kind = _WEIGHTED_OPS.get(op["op_name"])
        if kind is None:
            continue
        ins = [i for i in op["inputs"] if i >= 0]
        w = tensors[ins[1]]
        out = tensors[op["outputs"][0]]
        w_elems = int(np.prod(w["shape"]))
        wbytes += w_elems * np.dtype(w["dtype"]).itemsize
        if np.dtype(w["dtype"]) == np.int8:
            w8 += w_elems
        if len(ins) > 2:
            b = tensors[ins[2]]
            b_elems = int(np.prod(b["shape"]))
            wbytes += b_elems * np.dtype(b["dtype"]).itemsize
            if np.dtype(b["dtype"]) == np.int32:
                b32 += b_elems
        out_elems = int(np.prod(out["shape"][1:]))
        if kind == "conv":  # weights [Cout, kh, kw, Cin]
            macs += out_elems * int(np.prod(w["shape"][1:]))
        elif kind == "depthwise":  # weights [1, kh, kw, Cout]
            macs += out_elems * int(np.prod(w["shape"][1:3]))
        else:  # dense: weights [out, in]
            macs += out_elems * int(w["shape"][1])
    return TFLiteComplexity(weight_bytes=wbytes, int8_weights=w8, int32_biases=b32, macs_per_patch=macs,
                            file_bytes=Path(path).stat().st_size)


def run_int8(path: str | Path, x: np.ndarray, *, xnnpack: bool = True) -> np.ndarray:
    """Run an INT8 TFLite model on float inputs.

    Args:
        path: ``.tflite`` with int8 input ``[1, F, T, 1]`` and int8 output ``[1, n_classes]``.
        x: Normalised features, shape ``(n, 1, F, T)`` (NCHW, as the PyTorch model takes them).
        xnnpack: Use the XNNPACK delegate (LiteRT's default) or the builtin reference kernels; a model XNNPACK
            cannot prepare runs on the builtin kernels (with a warning; ``xnnpack_prepares`` tells).

    Returns:
        De-quantised logits, shape ``(n, n_classes)``.

    Raises:
        UserInputError: The model's input is not int8, or its shape does not match ``x``.
    """
    it = litert_interpreter(path, xnnpack=xnnpack)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    if np.dtype(inp["dtype"]) != np.int8:
        raise UserInputError(f"{path}: input dtype is {np.dtype(inp['dtype'])}, not int8; export a full-integer model")
    expected = tuple(int(v) for v in inp["shape"][1:])
    nhwc = x.transpose(0, 2, 3, 1)
    if tuple(nhwc.shape[1:]) != expected:
        raise UserInputError(f"{path}: model input is {expected} (NHWC), features are {tuple(nhwc.shape[1:])}")
    s_in, z_in = inp["quantization"]
    s_out, z_out = out["quantization"]
    q = np.clip(np.round(nhwc / s_in + z_in), -128, 127).astype(np.int8)
    logits = np.empty((len(x), int(out["shape"][-1])), dtype=np.float32)
    for i in range(len(x)):
        it.set_tensor(inp["index"], q[i:i + 1])
        it.invoke()
        logits[i] = (it.get_tensor(out["index"]).astype(np.float32).reshape(-1) - z_out) * s_out
    return logits
