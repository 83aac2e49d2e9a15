"""Seeds and jobs of the golden-digest test (tests/federation/test_golden.py), shared
with the Python API test that reproduces them."""

import hashlib

SEEDS = {"bank": hashlib.sha256(b"golden-bank").digest(),
         "platform": hashlib.sha256(b"golden-platform").digest()}

JOBS = {
    "secureboost": {"params": {"n_trees": 2, "max_depth": 3, "max_bin": 16}},
    "logistic_regression": {"params": {"epochs": 2, "batch_size": 128}},
}
