"""Integer (INT8) arithmetic: the numpy reference that predicts TFLite/LiteRT and onnxruntime."""
