"""Inference: trained models from any file (model_files.py, loading.py, predictor.py: ONNX without
torch), how a photo is framed for them (preprocess.py, face.py), predict, evaluate and export.
The web layer and the CLI both use this package; it uses neither. Nothing is imported here, so that
`fixmatch serve` with an ONNX model never loads torch."""
