"""Use a trained run: batch prediction, export to ONNX/TorchScript, and an HTTP service.

    medfit.deploy.predict   the predict verb's inputs (files, folders, manifests) and CSV output
    medfit.deploy.export    ONNX / TorchScript files with their preprocessing, verified on export
    medfit.deploy.serve     FastAPI app (`create_app`) and `serve` (uvicorn)
    medfit.deploy.cli       the `predict`, `export` and `serve` subcommands

Every piece loads the run through `medfit.inference.Predictor`, which takes its preprocessing from
the run (the checkpoint's `preprocess` record and medfit's own decode/resize functions); nothing
here re-specifies it.
"""
