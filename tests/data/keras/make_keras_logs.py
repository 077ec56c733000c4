"""How training.log and history.json here were made: a real 3-epoch tf_keras run (tf-keras 2.21,
the `bench` extra), its CSVLogger file, and `history.history` dumped with `json.dump` as users
save it. Not run by the tests; rerun with `python make_keras_logs.py OUT_DIR`."""

import json
import sys
from pathlib import Path

import numpy as np
import tf_keras as keras

out = Path(sys.argv[1])
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
model = keras.Sequential(
    [
        keras.layers.Dense(4, activation="relu", input_shape=(8,)),
        keras.layers.Dense(2, activation="softmax"),
    ]
)
model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy", metrics=["accuracy"])
logger = keras.callbacks.CSVLogger(str(out / "training.log"))
hist = model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[logger])
history = {k: [float(v) for v in values] for k, values in hist.history.items()}
(out / "history.json").write_text(json.dumps(history))
