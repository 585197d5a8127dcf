"""objfs.s3 — the S3 face: a Quart-Trio app over `Store`, served by hypercorn.

`app.create_app` builds it; `handlers.route` picks one handler per request,
and each handler parses, calls the store and renders XML. `sigv4` and
`chunked` check signatures, `body` streams object bodies to the store's
writer, `errors` is the one table from core errors to S3 error codes.
`docs/s3.md` has the whole face.
"""
