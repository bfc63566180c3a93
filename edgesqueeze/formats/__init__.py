"""Reading and checking model files without a runtime (numpy and the standard library; no torch,
onnx or TFLite package), so a board can check and describe a file before any runtime is
installed. One job per module, each importing only the ones listed before it:

    metadata.py           ModelMetadata: the "edgesqueeze" JSON every exported file carries
    flatbuffer.py         the read-only flatbuffer walker and the TFLite schema facts it needs
    files.py              a model file's bytes, its format, its metadata; one error per problem
    tflite.py             check_tflite_bytes (the walk an interpreter would make), read_tflite_metadata
    onnx.py               the protobuf walk, metadata_props, check_onnx_scales
    standard_metadata.py  the TFLITE_METADATA entry and associated files MediaPipe reads
    describe.py           describe_model: format, metadata, tensors, operators
    bundle.py             the update bundle (.esq): pack_bytes, verified unpacking, read_model_file

The writers (`export/`) import from here; nothing here imports export, runtime, camera or cli.
"""
