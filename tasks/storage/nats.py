"""NATS JetStream object store replicas (nats://), through nats-py.

URL: nats://HOST[:PORT]/BUCKET, as litestream reads it: the object store bucket
is the replica's root and must exist beforehand (litestream does not create it).
litestream takes a user and password from the URL or its config file, a creds
file, token or nkey from its config; drillbook reads LITESTREAM_NATS_USERNAME /
LITESTREAM_NATS_PASSWORD, LITESTREAM_NATS_CREDS (a creds file, by path) or
LITESTREAM_NATS_TOKEN and hands them to litestream as ${VAR} references in its
config (`litestream_replica`).

Layout, as litestream's nats client writes it: objects named ltx/<level>/<minTXID>-<maxTXID>.ltx
in the bucket. Listing times are when the store wrote each object's metadata (the
JetStream message timestamp: nanoseconds, kept to microseconds). The object store
has no ranged reads: `read` fetches the whole object and returns the range.

A promotion drill (promote.replica = nats://HOST/NAME) gets a bucket of its own,
NAME-<drill>, made by drillbook before litestream writes (refused if it exists) and
deleted after a PASS, kept after a FAIL: litestream's client has no sub-prefix.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import unquote, urlsplit

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject, server_place
from drillbook.tasks.text import redact_url

#: What drillbook reads and passes to litestream for NATS (litestream reads them through its config's ${VAR}).
_LITESTREAM_ENV = ("LITESTREAM_NATS_USERNAME", "LITESTREAM_NATS_PASSWORD", "LITESTREAM_NATS_CREDS", "LITESTREAM_NATS_TOKEN")


def check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if not unquote(parts.path).strip("/"):
        return f"{redact_url(url)}: no object store bucket: write nats://HOST:4222/BUCKET"
    if parts.password:
        return f"{redact_url(url)}: a password in the URL ends up in logs and reports: set LITESTREAM_NATS_USERNAME and LITESTREAM_NATS_PASSWORD instead"
    creds = os.environ.get("LITESTREAM_NATS_CREDS")
    if creds and not os.path.isfile(creds):
        return f"LITESTREAM_NATS_CREDS={creds} is not a file"
    return None


def litestream_replica(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    replica = {"type": "nats", "url": f"nats://{host}/{unquote(parts.path).strip('/')}"}
    for name, field in (
        ("LITESTREAM_NATS_USERNAME", "username"),
        ("LITESTREAM_NATS_PASSWORD", "password"),
        ("LITESTREAM_NATS_CREDS", "creds"),
        ("LITESTREAM_NATS_TOKEN", "token"),
    ):
        if os.environ.get(name):
            replica[field] = "${" + name + "}"
    return replica


def _run(coro_factory):
    """Run a coroutine to the end from sync code, also when the caller's thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_factory()).result()


class NATSStorage:
    """A replica in the JetStream object store nats://host:port/bucket; one connection per operation."""

    def __init__(self, url: str, *, timeout: float):
        parts = urlsplit(url)
        self.server = f"nats://{parts.netloc.rpartition('@')[2] or '127.0.0.1:4222'}"
        self.bucket = unquote(parts.path).strip("/")
        self.timeout = timeout
        self.endpoint = self.server
        self.where = f"{self.server}/{self.bucket}"

    async def _with_js(self, work, doing: str, where: str):
        """Connect, run `work(jetstream)`, close; the client's errors mapped onto StorageProblem, naming `where`."""
        import nats
        from nats import errors as nats_errors
        from nats.js import errors as js_errors

        options = dict(
            servers=[self.server],
            connect_timeout=min(5.0, self.timeout),
            allow_reconnect=False,
            # One attempt per server: nats-py reads 0 as "no limit" and retries the first connect forever.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
        )
        if os.environ.get("LITESTREAM_NATS_CREDS"):
            options["user_credentials"] = os.environ["LITESTREAM_NATS_CREDS"]
        elif os.environ.get("LITESTREAM_NATS_USERNAME"):
            options["user"] = os.environ["LITESTREAM_NATS_USERNAME"]
            options["password"] = os.environ.get("LITESTREAM_NATS_PASSWORD", "")
        elif os.environ.get("LITESTREAM_NATS_TOKEN"):
            options["token"] = os.environ["LITESTREAM_NATS_TOKEN"]

        async def quiet(_exc):  # nats-py logs and retries through callbacks; the error is raised to us instead
            return None

        try:
            nc = await nats.connect(**options, error_cb=quiet)
        except nats_errors.NoServersError:
            raise StorageError(StorageProblem.UNREACHABLE, f"NATS server unreachable: {self.server} {doing} {where}") from None
        except nats_errors.Error as exc:
            if _refused(exc):
                raise StorageError(
                    StorageProblem.ACCESS_DENIED,
                    f"the NATS server refused the credentials {doing} {where}: check LITESTREAM_NATS_USERNAME / "
                    "LITESTREAM_NATS_PASSWORD, LITESTREAM_NATS_CREDS or LITESTREAM_NATS_TOKEN",
                ) from None
            raise StorageError(
                StorageProblem.UNREACHABLE, f"cannot connect to NATS at {self.server} {doing} {where}: {type(exc).__name__}"
            ) from None
        except (TimeoutError, OSError) as exc:
            raise StorageError(
                StorageProblem.UNREACHABLE, f"NATS server unreachable: {self.server} ({type(exc).__name__}) {doing} {where}"
            ) from None
        try:
            return await work(nc.jetstream(timeout=self.timeout))
        except StorageError:
            raise
        except js_errors.ServiceUnavailableError:
            raise StorageError(StorageProblem.STORAGE_ERROR, f"JetStream is not enabled on {self.server} {doing} {where}") from None
        except (TimeoutError, nats_errors.TimeoutError):
            raise StorageError(StorageProblem.TIMEOUT, f"NATS did not answer within {self.timeout:g}s {doing} {where}") from None
        except nats_errors.Error as exc:
            raise StorageError(StorageProblem.STORAGE_ERROR, f"NATS error {doing} {where}: {type(exc).__name__}: {exc}") from None
        finally:
            await nc.close()

    async def _with_store(self, work, doing: str, name: str | None = None):
        from nats.js import errors as js_errors

        where = f"{self.where}/{name}" if name else self.where

        async def in_store(js):
            try:
                store = await js.object_store(self.bucket)
            except js_errors.BucketNotFoundError:
                raise StorageError(
                    StorageProblem.MISSING,
                    f"object store bucket {self.bucket!r} does not exist on {self.server} (litestream needs it created beforehand)",
                ) from None
            try:
                return await work(store)
            except js_errors.ObjectNotFoundError:
                raise StorageError(StorageProblem.STORAGE_ERROR, f"listed but missing: {where}") from None

        return await self._with_js(in_store, doing, where)

    def create_bucket(self) -> None:
        """Create this URL's object store bucket, refusing one that exists: a promotion drill never writes into a bucket it did not make."""
        from nats.js import errors as js_errors

        async def create(js):
            try:
                await js.object_store(self.bucket)
            except js_errors.BucketNotFoundError:
                await js.create_object_store(self.bucket)
                return
            raise StorageError(
                StorageProblem.STORAGE_ERROR,
                f"object store bucket {self.bucket!r} exists already on {self.server}: drillbook will not write into it",
            )

        _run(lambda: self._with_js(create, "creating", self.where))

    def delete_bucket(self) -> int:
        """Delete this URL's object store bucket and everything in it; how many objects it held."""

        async def delete(js):
            store = await js.object_store(self.bucket)
            held = [info for info, _stored in await self._objects(store) if not info.deleted]
            await js.delete_object_store(self.bucket)
            return len(held)

        return _run(lambda: self._with_js(delete, "deleting", self.where))

    async def _objects(self, store) -> list[tuple[object, datetime]]:
        """Every object's info and the time the store wrote it, from the bucket's metadata stream.

        The info's own mtime is what the writer put there (litestream's Go client leaves
        it zero); the metadata message's stream timestamp is the store's clock, in
        nanoseconds. nats-py's ObjectStore.list() drops it, so the listing reads the
        stream as list() does (last message per object, ordered consumer).
        """
        import json

        from nats.js import api
        from nats.js import errors as js_errors

        js, bucket = store._js, self.bucket
        subject = f"$O.{bucket}.M.>"
        try:
            await js.get_last_msg(f"OBJ_{bucket}", subject)
        except js_errors.NotFoundError:  # no object was ever stored
            return []
        found: list[tuple[object, datetime]] = []
        done = asyncio.Event()

        async def collect(msg):
            found.append((api.ObjectInfo.from_response(json.loads(msg.data)), msg.metadata.timestamp))
            if msg.metadata.num_pending == 0:
                done.set()

        subscription = await js.subscribe(subject, cb=collect, ordered_consumer=True, deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT)
        try:
            await asyncio.wait_for(done.wait(), self.timeout)
        finally:
            await subscription.unsubscribe()
        return found

    async def _peek(self, store) -> None:
        from nats.js import errors as js_errors

        try:
            await store._js.get_last_msg(f"OBJ_{self.bucket}", f"$O.{self.bucket}.M.>")
        except js_errors.NotFoundError:  # an empty bucket lists nothing: not an error
            pass

    def probe(self) -> None:
        _run(lambda: self._with_store(self._peek, "listing"))

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        objects = _run(lambda: self._with_store(self._objects, "listing"))
        for info, stored in objects:
            if info.deleted or not info.name.startswith(prefix):
                continue
            yield StoredObject(key=info.name, size=info.size or 0, modified=stored)

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        async def fetch(store):
            return (await store.get(key)).data

        data = _run(lambda: self._with_store(fetch, "reading", key))
        return data[start:] if length is None else data[start : start + length]


def _refused(exc: Exception) -> bool:
    """Did the server refuse the credentials? nats-py raises a plain Error on connect for the server's
    -ERR 'Authorization Violation'; its own parser tells that case apart by the same protocol constant."""
    from nats import errors as nats_errors
    from nats.protocol.parser import AUTHORIZATION_VIOLATION

    return isinstance(exc, nats_errors.AuthorizationError) or AUTHORIZATION_VIOLATION in str(exc).lower()


#: The promotion buckets this process made (server/bucket): the only ones `delete_drill_bucket` deletes.
_MADE: set[str] = set()


def drill_bucket_url(url: str, name: str) -> str:
    """A promotion drill's own place: a bucket of its own, the configured bucket's name plus the drill's.

    litestream's NATS client writes at the bucket's root (it has no path), so the drill's
    place is a bucket rather than a sub-prefix: nats://host/promote -> nats://host/promote-<drill>.
    """
    parts = urlsplit(url)
    own = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return f"{parts.scheme}://{parts.netloc}/{unquote(parts.path).strip('/')}-{own}"


def make_drill_bucket(url: str, timeout: float) -> None:
    storage = NATSStorage(url, timeout=timeout)
    storage.create_bucket()
    _MADE.add(storage.where)


def delete_drill_bucket(url: str, timeout: float) -> int:
    storage = NATSStorage(url, timeout=timeout)
    if storage.where not in _MADE:
        raise StorageError(
            StorageProblem.STORAGE_ERROR, f"{storage.where} was not made by this drill: drillbook deletes only its own buckets"
        )
    removed = storage.delete_bucket()
    _MADE.discard(storage.where)
    return removed


def store_scope(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or 4222}/{parts.path.strip('/')}"


BACKEND = Backend(
    schemes=("nats",),
    storage=NATSStorage,
    scope=store_scope,
    place=server_place,
    env=_LITESTREAM_ENV,
    secret_env=("LITESTREAM_NATS_PASSWORD", "LITESTREAM_NATS_TOKEN"),
    credentials=(
        "LITESTREAM_NATS_CREDS (a .creds file), or LITESTREAM_NATS_USERNAME / LITESTREAM_NATS_PASSWORD, or LITESTREAM_NATS_TOKEN",
        "drillbook hands them to litestream as ${VAR} in the config it writes: never put a password in the URL",
    ),
    check_url=check_url,
    litestream_replica=litestream_replica,
    delete_prefix=delete_drill_bucket,
    drill_url=drill_bucket_url,
    prepare_drill=make_drill_bucket,
)
