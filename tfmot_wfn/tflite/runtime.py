"""Pick a TFLite interpreter and load palette files, decoded once or as stored.

The runtimes tried, in order: ``ai_edge_litert`` (LiteRT, the maintained
package), ``tflite_runtime`` (the older standalone wheel), then ``tf.lite``
from TensorFlow.

```python
interpreter = load_interpreter("model_palette.tflite")            # fast: weights decoded once
slow = load_interpreter("model_palette.tflite", decode=False)     # runs CAST+GATHER each call
print(runtime_name(interpreter))                                   # "ai_edge_litert"
```
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, List, Optional, Tuple, Union

from tfmot_wfn.tflite import flatbuffer as fb

RUNTIMES: Tuple[str, ...] = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": None,
}


def _interpreter_class(runtime: str) -> Callable:
    if runtime == "tensorflow":
        import tensorflow as tf

        return tf.lite.Interpreter
    return importlib.import_module(_MODULES[runtime]).Interpreter


def available_runtimes() -> List[str]:
    """The runtimes that import here, in preference order."""
    found = []
    for runtime in RUNTIMES:
        try:
            _interpreter_class(runtime)
        except ImportError:
            continue
        found.append(runtime)
    return found


def make_interpreter(
    model: Union[str, os.PathLike, bytes, bytearray],
    num_threads: Optional[int] = None,
    runtime: Optional[str] = None,
):
    """An interpreter (tensors not yet allocated) for a file path or model bytes.

    Args:
      model: a ``.tflite`` path, or the model's bytes (``model_content``).
      num_threads: CPU threads (None: the runtime's default).
      runtime: force ``"ai_edge_litert"``, ``"tflite_runtime"`` or ``"tensorflow"``;
        None picks the first that imports.

    ```python
    interpreter = make_interpreter("model.tflite", num_threads=1)
    interpreter.allocate_tensors()
    ```
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
    errors = []
    for name in ([runtime] if runtime else RUNTIMES):
        try:
            cls = _interpreter_class(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
            continue
        kwargs = {} if num_threads is None else {"num_threads": int(num_threads)}
        if isinstance(model, (bytes, bytearray, memoryview)):
            _check_identifier(bytes(model[:8]), "the model bytes")
            interpreter = cls(model_content=bytes(model), **kwargs)
        else:
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no TFLite file at {path!r}")
            with open(path, "rb") as f:
                _check_identifier(f.read(8), repr(path))
            interpreter = cls(model_path=path, **kwargs)
        interpreter._tfmot_wfn_runtime = name  # noqa: SLF001 - lets runtime_name() report it
        return interpreter
    raise ImportError("no TFLite interpreter found; install ai-edge-litert (pip install "
                      "ai-edge-litert), tflite-runtime or tensorflow. Tried: " + "; ".join(errors))


def _check_identifier(head: bytes, what: str) -> None:
    """Refuse what is not a TFLite flatbuffer before the runtime sees it (its own message
    for an empty file is "model_path or model_content must be specified")."""
    if not fb.has_identifier(head):
        raise ValueError(f"{what} is not a TFLite file: the identifier 'TFL3' is missing at "
                         f"bytes 4-8 ({len(head)} bytes read)")


def runtime_name(interpreter) -> str:
    """Which runtime made an interpreter returned by `make_interpreter`/`load_interpreter`."""
    return getattr(interpreter, "_tfmot_wfn_runtime", type(interpreter).__module__)


def load_interpreter(
    path: Union[str, os.PathLike, bytes],
    decode: bool = True,
    num_threads: Optional[int] = None,
    runtime: Optional[str] = None,
):
    """An allocated interpreter for a palette (or dense) TFLite file.

    Args:
      path: the ``.tflite`` file (or its bytes).
      decode: True (default) decodes the palette once, in memory, into static
        float32 weights and drops the decode ops: the latency of the float model.
        False runs the file as stored (``CAST`` + ``GATHER`` before each layer).
      num_threads: CPU threads (None: the runtime's default).
      runtime: as in `make_interpreter`.

    ```python
    interpreter = load_interpreter("model_palette.tflite", num_threads=1)
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    ```
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        data = bytes(path)
    else:
        if not os.path.isfile(os.fspath(path)):
            raise FileNotFoundError(f"no TFLite file at {os.fspath(path)!r}")
        with open(path, "rb") as f:
            data = f.read()
    if decode:
        from tfmot_wfn.tflite.palette_decoding import decode_palette

        data = decode_palette(data)
    interpreter = make_interpreter(data, num_threads=num_threads, runtime=runtime)
    interpreter.allocate_tensors()
    return interpreter


def _signature(interpreter) -> Optional[Tuple[dict, dict]]:
    """The first signature's ``({input name: details}, {output name: details})``, or None
    for a file without one."""
    signatures = interpreter.get_signature_list() if hasattr(interpreter, "get_signature_list") else {}
    if not signatures:
        return None
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    return runner.get_input_details(), runner.get_output_details()


def _output_order(interpreter, signature) -> List[dict]:
    """The output details in the Keras model's order: the converter names a Keras model's
    outputs ``output_0``, ``output_1``, ... in its signature (the interpreter's own order
    differs); the interpreter's order for other files."""
    details = interpreter.get_output_details()
    if signature is None:
        return details
    names = list(signature[1])
    if sorted(names) != sorted(f"output_{i}" for i in range(len(names))) or len(names) != len(details):
        return details
    by_index = {d["index"]: d for d in details}
    return [by_index[signature[1][f"output_{i}"]["index"]] for i in range(len(names))]


def _input_details(interpreter, signature, inputs, named) -> List[Tuple[dict, object]]:
    """``(details, array)`` per input: positional for a single input, by signature name
    (``run_interpreter(it, query=q, value=v)`` or one dict) for several."""
    details = interpreter.get_input_details()
    if len(inputs) == 1 and isinstance(inputs[0], dict) and not named:
        named, inputs = dict(inputs[0]), ()
    if named:
        if inputs:
            raise TypeError("pass the inputs either by position or by name, not both")
        if signature is None:
            raise ValueError("this TFLite file has no signature, so its inputs have no names: pass "
                             "them by position, in the order of interpreter.get_input_details()")
        names = sorted(signature[0])
        if sorted(named) != names:
            raise ValueError(f"the model's inputs are named {names}, got {sorted(named)}")
        by_index = {d["index"]: d for d in details}
        return [(by_index[signature[0][name]["index"]], named[name]) for name in names]
    if len(inputs) != len(details):
        raise ValueError(f"the model takes {len(details)} inputs, got {len(inputs)}")
    if len(details) > 1 and signature is not None:
        names = ", ".join(f"{name}=..." for name in sorted(signature[0]))
        raise ValueError(
            f"the model takes {len(details)} inputs; TFLite orders them differently from the "
            f"Keras model, so pass them by name: run_interpreter(interpreter, {names}) (or one "
            "dict of them)")
    return list(zip(details, inputs))


def run_interpreter(interpreter, *inputs, **named_inputs):
    """Run one batch through an allocated interpreter; resizes the batch if needed.

    A model with one input takes it by position; one with several takes them by the names
    of the Keras model's inputs (``run_interpreter(interpreter, query=q, value=v)``, or one
    dict), since TFLite orders them its own way. Returns the output, or the list of outputs
    in the Keras model's order when it has several (files from `export_tflite` and
    `convert_to_tflite`, whose signature names them ``output_0``, ``output_1``, ...; other
    files' outputs, and dict outputs, come in the file's order: map them by name with
    ``interpreter.get_signature_runner()``).

    ```python
    probabilities = run_interpreter(load_interpreter("model.tflite"), x_test)
    ```
    """
    import numpy as np

    signature = _signature(interpreter)
    feeds = _input_details(interpreter, signature, inputs, named_inputs)
    resized = False
    for d, x in feeds:
        if tuple(d["shape"]) != tuple(np.shape(x)):
            interpreter.resize_tensor_input(d["index"], list(np.shape(x)))
            resized = True
    if resized:
        interpreter.allocate_tensors()
    for d, x in feeds:
        interpreter.set_tensor(d["index"], np.asarray(x, dtype=d["dtype"]))
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in _output_order(interpreter, signature)]
    return outputs[0] if len(outputs) == 1 else outputs
