"""Writers for deployable model files.

`ops.py` is the one table from graph op to ONNX and TFLite op that both writers read; `onnx.py`
and `tflite.py` never import each other. Every writer verifies its file before moving it into
place (`files.atomic_output`), so a failed export leaves nothing at the target path.
Both end in a float softmax ("probability"; `ops.py` says which outputs each format has), and
`channels.py` turns a model to the files' channel order (RGB unless asked otherwise).
"""
