"""The library proper: the compile driver and what `ember.compile`, `ember.Config`,
`ember.InferenceSession`, `ember.check` and `ember.quantize` return.

ONNX in, a runnable model out: compile.py drives frontend -> passes -> codegen; aot.py writes
and caches artifacts; the model wrappers (specialize.py, staging.py, structured.py) recompile
per input shape or structure; predictor.py and session.py are the Paddle- and onnxruntime-style
APIs over them. The command line and the debugging tools built on this are in tools/.
"""
