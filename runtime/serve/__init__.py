"""`pdd-serve`: music over HTTP (ASGI, the `[serve]` extra, no torch).

- `schema`: the JSON body of POST /api/generate → a checked `GenerateRequest` (or one `BadRequest` line).
- `stages`: which `Sampler` runs a request (settings checked by the runtime's pure `resolve_settings`), and when a
  batched model call may stand in for batch-1 calls without changing a bit.
- `batcher`: a bounded queue that hands out groups of up to `max_batch` requests with the same sampling settings,
  waiting at most `max_wait` for a group to fill.
- `service`: the engine behind the API: a sampler thread (noise → x̂0) and a vocoder thread (x̂0 → audio bytes) so one
  group samples while the previous one decodes; per-clip seeds make a batched clip byte-identical to `pdd-run -n 1`.
- `guard`: who may call the server (Host allowlist, same-origin only, JSON POSTs), as ASGI middleware.
- `app`: the FastAPI app (page, /api/generate, /api/engine, /api/health, JSON errors, no stack traces on the wire).

Only `app` imports FastAPI; the rest is plain Python + pdd.runtime, so the service is usable and testable without it.
"""
