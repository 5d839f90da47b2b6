"""Embedding models: load the configured model (bundled weights), encode on CPU or GPU, export to ONNX/OpenVINO.

Below ingest and serve, which both use it."""
