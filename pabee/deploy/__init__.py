"""A trained model put to use: the one ONNX exporter (onnx_graph.py), the cuts and their cache, the
exit engine on ONNX Runtime and its one-graph patience exit, plain and shallow exports
(export.py's), the model card, and the predictor with its input and output (predict.py's). A new
export goes here."""

from pabee.base.lazy import lazy_exports

ENTRY_POINTS = {"Predictor": "predictor", "OrtModel": "ort_model", "export": "plain_export",
                "write_card": "model_card"}  # name -> its module here
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
