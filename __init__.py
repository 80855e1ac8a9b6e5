"""ember: an MLIR-style compiler that lowers ONNX models to native CPU code.

model = ember.compile("model.onnx")
outputs = model.run({"input": x})
"""

__version__ = "0.1.0"
