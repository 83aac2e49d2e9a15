"""Online scoring: ``fedjoint serve`` on the bank's node, lookups answered by the
platform's node over the mutual-TLS channel (docs/serving.md).

What crosses, per scored applicant (one ``serve.lookup`` control request per
micro-batch, :mod:`.protocol`):

* bank -> platform: a 128-bit keyed pseudonym of the applicant's ID (HMAC-SHA256 under a
  key the bank draws per serving session). Never the bank's features or the score.
* platform -> bank: whether it holds the ID, and the model's platform half evaluated on
  its row: SecureBoost's left/right decision at every platform split (one bit each), or
  LR's partial score ``x_p . w_p``. IDs it does not hold are answered with the model's
  defaults (missing-value directions / 0) and flagged, or refused (``serving.unknown_ids``).

Who learns what: the platform learns which pseudonyms are scored and when (and so, for
an ID it holds, which of its enterprises the bank is assessing); the bank learns the
split decisions or partial score of each applicant and whether the platform holds the
ID. Both sides count it: the platform's ``data_dir/serving/ledger.jsonl``, the bank's
``data_dir/serving/<model>.ledger.jsonl`` and ``GET /v1/models``.

Modules: :mod:`.protocol` (message table, pseudonyms, array encoding), :mod:`.platform`
(the platform's sessions, stores, policy and ledger; wired into the node daemon),
:mod:`.bank` (a served model on the bank: session, lookups, scoring), :mod:`.bulk`
(a CSV scored through a session, no PSI), :mod:`.export` (the full model as XGBoost
JSON when both policies allow the platform to reveal its half), :mod:`.batcher`
(micro-batching with a bounded queue), :mod:`.app` (the FastAPI application). The
last two need the ``serve`` extra (``pip install 'fedjoint[serve]'``); nothing here
imports them unless ``fedjoint serve`` runs.
"""
