"""The bank's online scoring API (FastAPI, served by uvicorn; docs/serving.md).

``POST /v1/score``        {"model", "id", "features": {name: number | null}}
                          -> {"model", "id", "score", "probability", "platform_data"}
``POST /v1/score:batch``  {"model", "applicants": [{"id", "features"}, ...]}
                          -> {"model", "results": [...]} (one per applicant, in order)
``GET /v1/models``        the served models, their bank features and counters
``GET /healthz``          liveness (no token needed; says nothing about the models)
``GET /openapi.json``     the OpenAPI document

Every ``/v1`` call needs ``Authorization: Bearer <token>`` (the token file, 0600). Bodies
are parsed here, not by a framework validator, so each error names its field:
400 malformed JSON, 401 no or wrong token, 404 unknown model, 413 body over
``limits.serve_max_body_bytes``, 422 a missing, unexpected or mistyped field or
feature, 429 the platform's rate or daily budget, 503 the queue is full or the
platform does not answer (with ``Retry-After``). Nothing answers 500 with a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from federation.serving.bank import ServedModel, ServingError
from federation.serving.batcher import Batcher, QueueFull

log = logging.getLogger("fedjoint.serving")

_FEATURES = {"type": "object", "additionalProperties": {"type": ["number", "null"]},
             "description": "the model's bank features by name (null: missing)"}
_APPLICANT = {"type": "object", "required": ["id", "features"], "additionalProperties": False,
              "properties": {"id": {"type": "string", "maxLength": 256}, "features": _FEATURES}}
_SCORE_REQ = {"type": "object", "required": ["model", "id", "features"],
              "additionalProperties": False,
              "properties": {"model": {"type": "string"}, **_APPLICANT["properties"]}}
_BATCH_REQ = {"type": "object", "required": ["model", "applicants"],
              "additionalProperties": False,
              "properties": {"model": {"type": "string"},
                             "applicants": {"type": "array", "items": _APPLICANT}}}
_RESULT = {"type": "object", "properties": {
    "id": {"type": "string"}, "score": {"type": "number"},
    "probability": {"type": "number"},
    "probabilities": {"type": "array", "items": {"type": "number"}},
    "points": {"type": "number", "description": "woe_lr: scorecard points (higher = "
               "lower risk)"},
    "platform_points": {"type": "number"},
    "reasons": {"type": "array", "description": "woe_lr: reason codes, most points lost "
                "vs the best bin first (bank variables; the platform as one total)",
                "items": {"type": "object", "properties": {
                    "feature": {"type": "string"}, "points_lost": {"type": "number"}}}},
    "platform_data": {"type": "boolean", "description": "false: the platform holds no "
                      "data for the ID; the model's defaults were used"},
    "error": {"type": "string"}}}


def _body(schema: dict, result: dict) -> dict:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}},
            "responses": {"200": {"description": "scored",
                                  "content": {"application/json": {"schema": result}}}}}


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is answered 413 without reading on."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        msg = (f"the request body is larger than limits.serve_max_body_bytes = "
               f"{self.limit} bytes")
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await _error(413, msg, "body")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            m = await receive()
            if m["type"] == "http.request":
                seen += len(m.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return m
        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, msg, "body")(scope, receive, send)


class _TooLarge(Exception):
    pass


def _error(status: int, message: str, field: str = "", headers: dict | None = None):
    body = {"error": message, **({"field": field} if field else {})}
    return JSONResponse(body, status_code=status, headers=headers)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _parse(raw: bytes) -> dict:
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServingError(400, f"malformed JSON: {exc}", "body") from None
    if not isinstance(obj, dict):
        raise ServingError(400, "the body must be a JSON object", "body")
    return obj


def _check_keys(obj: dict, required: tuple, where: str = "") -> None:
    for k in required:
        if k not in obj:
            raise ServingError(422, f"missing field {where}{k}", f"{where}{k}")
    for k in obj:
        if k not in required:
            raise ServingError(422, f"unexpected field {where}{k} (expected "
                               f"{', '.join(required)})", f"{where}{k}")


def create_app(models: dict[str, ServedModel], token: str, limits, wait_s: float) -> FastAPI:
    batchers = {m: Batcher(sm.score_rows, max_rows=limits.serve_max_batch_rows,
                           queue_rows=limits.serve_queue_rows, wait_s=wait_s)
                for m, sm in models.items()}

    @asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        for m, b in batchers.items():
            b.start()
            try:
                await loop.run_in_executor(None, models[m].open)
            except ServingError as exc:   # retried on the first request
                log.warning("serving.open_failed model=%s: %s", m, exc)
        yield
        for m, b in batchers.items():
            await b.stop()
            await loop.run_in_executor(None, models[m].close)

    app = FastAPI(title="fedjoint online scoring", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    expected = f"Bearer {token}".encode()

    def authorised(request: Request) -> bool:
        got = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(got, expected)

    def model_of(obj: dict) -> ServedModel:
        m = obj.get("model")
        if not isinstance(m, str) or m not in models:
            raise ServingError(404, f"model {str(m)[:80]!r} is not served here (served: "
                               f"{', '.join(models)})", "model")
        return models[m]

    def applicant(sm: ServedModel, a, where: str) -> tuple[str, np.ndarray]:
        if not isinstance(a, dict):
            raise ServingError(422, f"{where or 'body'}: expected an object", where or "body")
        try:
            nid = sm.normalised_id(a["id"])
            if not isinstance(a["features"], dict):
                raise ServingError(422, "features: expected an object of name: number",
                                   "features")
            x = sm.features_row(a["features"])
        except ServingError as exc:
            exc.field = f"{where}{exc.field}"
            raise
        return nid, x

    async def run(sm: ServedModel, ids, X, where=lambda i: "") -> list[dict]:
        try:
            sm.check_rows(X)
        except ServingError as exc:
            exc.field = f"{where(getattr(exc, 'row', 0))}{exc.field}"
            raise
        try:
            return await batchers[sm.model_id].submit(ids, X)
        except QueueFull as exc:
            raise ServingError(503, f"the service is busy: {exc}") from None

    async def guarded(request: Request, fn):
        if not authorised(request):
            return _error(401, "missing or wrong bearer token", "authorization",
                          {"WWW-Authenticate": "Bearer"})
        try:
            return await fn(_parse(await request.body()))
        except _TooLarge:
            return _error(413, f"the request body is larger than limits.serve_max_body_bytes "
                          f"= {limits.serve_max_body_bytes} bytes", "body")
        except ServingError as exc:
            hdr = {"Retry-After": "1"} if exc.status in (429, 503) else None
            return _error(exc.status, str(exc), exc.field, hdr)
        except Exception as exc:  # noqa: BLE001 - logged; the client gets no traceback
            log.exception("serving.internal_error")
            return _error(500, f"internal error ({type(exc).__name__})")

    @app.post("/v1/score", openapi_extra=_body(_SCORE_REQ, _RESULT))
    async def score(request: Request):
        async def one(obj: dict):
            _check_keys(obj, ("model", "id", "features"))
            sm = model_of(obj)
            nid, x = applicant(sm, obj, "")
            res = (await run(sm, [nid], x[None, :]))[0]
            if "error" in res:
                return _error(res["status"], res["error"], "id")
            return JSONResponse({"model": sm.model_id, "id": obj["id"], **res})
        return await guarded(request, one)

    @app.post("/v1/score:batch", openapi_extra=_body(_BATCH_REQ, {
        "type": "object", "properties": {"model": {"type": "string"},
                                         "results": {"type": "array", "items": _RESULT}}}))
    async def score_batch(request: Request):
        async def many(obj: dict):
            _check_keys(obj, ("model", "applicants"))
            sm = model_of(obj)
            apps = obj["applicants"]
            lim = limits.serve_max_batch_rows
            if not isinstance(apps, list) or not 0 < len(apps) <= lim:
                raise ServingError(422, f"applicants: expected a list of 1..{lim} applicants "
                                   f"(limits.serve_max_batch_rows = {lim})", "applicants")
            rows = []
            for i, a in enumerate(apps):
                if isinstance(a, dict):
                    _check_keys(a, ("id", "features"), f"applicants[{i}].")
                rows.append(applicant(sm, a, f"applicants[{i}]."))
            ids = [r[0] for r in rows]
            res = await run(sm, ids, np.stack([r[1] for r in rows]),
                            lambda i: f"applicants[{i}].")
            out = [{"id": a["id"], **{k: v for k, v in r.items() if k != "status"}}
                   for a, r in zip(apps, res, strict=True)]
            return JSONResponse({"model": sm.model_id, "results": out})
        return await guarded(request, many)

    @app.get("/v1/models")
    async def list_models(request: Request):
        if not authorised(request):
            return _error(401, "missing or wrong bearer token", "authorization",
                          {"WWW-Authenticate": "Bearer"})
        return {"models": [{**sm.describe(), "queued": batchers[m].waiting,
                            "batches": batchers[m].batches} for m, sm in models.items()]}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return BodyLimit(app, limits.serve_max_body_bytes), app


class ThreadedServer:
    """uvicorn serving ``app`` from a background thread (tests, benchmarks, the Python
    API); ``stop()`` shuts it down (the lifespan closes the platform sessions)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import threading

        import uvicorn
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                    log_level="warning", access_log=False,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="fedjoint-serve",
                                       daemon=True)

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        import time
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scoring API did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
