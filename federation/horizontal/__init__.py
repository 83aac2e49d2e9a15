"""The runtime of horizontal jobs (the algorithm is :mod:`parties.horizontal`).

* :mod:`.job` - job.toml (``algorithm = "horizontal_lr"`` / ``"horizontal_mlp"``, the
  column schema, ``[params]``) and :func:`.job.run_horizontal`, the in-process run
  behind ``fedjoint.run_horizontal`` (Flower's Message API over
  :class:`.inprocess.InProcessGrid`: no SuperLink, no Ray);
* :mod:`.bankside` - a bank's node.toml policy (``[horizontal]``: join or refuse, which
  dataset and columns) and its data, transcript and report;
* :mod:`.ledger` - the signed per-bank transcripts (fedjoint's format) on both sides;
* :mod:`.deploy` - Flower's processes: the platform's SuperLink (TLS, SuperNode
  authentication by registered public keys), each bank's SuperNode, the Flower App
  (FAB) and ``flwr run``; started and stopped by PID from ``fedjoint horizontal``;
* :mod:`.apps` - the ServerApp / ClientApp objects the FAB names.

The same ServerApp loop (:func:`parties.horizontal.server.run_job`) and ClientApp
handlers (:func:`parties.horizontal.bank.make_client_app`) run in both modes.
"""
