"""Alibaba OSS's stand-in for the tests: an OSS-compatible endpoint on loopback (no OSS emulator can be had)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from drillbook.testing.servers import HOST, Served

OSS_KEY_ID = "oss-drill-key"
OSS_KEY_SECRET = "oss-drill-secret-not-real"  # the stand-in checks no signature: not a secret anywhere


@contextlib.contextmanager
def oss_standin() -> Iterator[Served]:
    """An OSS-compatible endpoint on loopback: moto's S3 application alone, in a thread.

    No OSS emulator can be had, and OSS's object API (ListObjectsV2, ranged GetObject,
    multipart upload, DeleteMultipleObjects) is S3's. moto's server picks a service from
    the signature's scope, which OSS's V4 signature names "oss", so the S3 app is served
    alone; and its answers carry S3's XML namespace, which OSS's answers have not (Alibaba's
    Python SDK finds no element under it), so the namespace is dropped from each answer.
    Signatures are not checked, but the access key id is: another one is refused (403
    InvalidAccessKeyId, as OSS answers), so refused credentials can be staged too.
    """
    import logging

    from moto.server import create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    namespace = b' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    s3 = create_backend_app("s3")

    def app(environ, start_response):
        credential = environ.get("HTTP_AUTHORIZATION", "").partition("Credential=")[2].partition("/")[0]
        if credential != OSS_KEY_ID:
            refused = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidAccessKeyId</Code>'
                b"<Message>The OSS Access Key Id you provided does not exist in our records.</Message></Error>"
            )
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(refused)))])
            return [refused]
        answered: list = []
        body = b"".join(s3(environ, lambda status, headers, exc_info=None: answered.extend((status, headers)) or (lambda data: None)))
        body = body.replace(namespace, b"")
        headers = [(k, v) for k, v in answered[1] if k.lower() != "content-length"] + [("Content-Length", str(len(body)))]
        start_response(answered[0], headers)
        return [body]

    server = make_server(HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="oss-standin", daemon=True)
    thread.start()
    try:
        yield Served(
            endpoint=f"http://{HOST}:{server.server_port}", env={"OSS_ACCESS_KEY_ID": OSS_KEY_ID, "OSS_ACCESS_KEY_SECRET": OSS_KEY_SECRET}
        )
    finally:
        server.shutdown()
        server.server_close()
