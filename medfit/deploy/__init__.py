"""Use a trained run: batch prediction, export to ONNX/TorchScript, and an HTTP service.

    medfit.deploy.runinfo   what a run directory says about inference (TTA flips, temperature)
    medfit.deploy.predict   `Predictor`: decode -> preprocess -> model, with TTA and calibration
    medfit.deploy.export    ONNX / TorchScript files with their preprocessing, verified on export
    medfit.deploy.serve     FastAPI app (`create_app`) and `serve` (uvicorn)
    medfit.deploy.cli       the `predict`, `export` and `serve` subcommands

Every piece takes its preprocessing from the run (the checkpoint's `preprocess` record and
medfit's own decode/resize functions); nothing here re-specifies it.
"""
