"""Horizontal federation across banks (``horizontal_lr`` / ``horizontal_mlp``) on Flower.

Several banks hold the same features for different customers; the platform runs the
aggregator. This package is the algorithm (layer: parties, so it imports only
``secure_agg``, ``parties`` and third-party flwr / torch / numpy):

* :mod:`.params` - the job's ``[params]``;
* :mod:`.model` - the torch models (logistic regression, a small MLP), local training
  with class weights, the central reference trainer;
* :mod:`.wire` - the message table (what crosses, per message type and phase);
* :mod:`.aggregate` - the aggregator's summation seam: plain sums or one SecAgg round
  (:mod:`secure_agg.secagg`) per sum over Flower's Message API;
* :mod:`.server` - the ServerApp main loop (join, counts, fit rounds with early
  stopping, test, close);
* :mod:`.bank` - the ClientApp handlers (the bank's phase vectors, its SecAgg client).

The runtime around it is ``federation.horizontal``: node.toml policy (join or not,
which dataset and columns), the signed per-bank transcripts, Flower's SuperLink /
SuperNode processes with TLS and SuperNode authentication, the CLI and the in-process
grid behind ``fedjoint.run_horizontal``. Both run the same ServerApp / ClientApp code.

Privacy: rows and labels never leave a bank. With ``secure_aggregation = true`` (the
default) every vector a bank contributes (its counts, its weighted model delta and
losses, its weighted test loss) is masked so the aggregator learns only sums over the
banks that finished the round (see :mod:`.server` for the list). Banks learn the
global model and the federation's totals. Not defended: a bank that sends poisoned
values within the clip (the sum is private, not robust); a malicious aggregator that
substitutes SecAgg keys is stopped only in signed rounds (``params.signed_rounds``:
banks check each other's keys against their configured signing keys).
"""
