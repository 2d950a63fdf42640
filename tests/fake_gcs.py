"""An offline stand-in for a Google Cloud Storage bucket, for tests that run with a work folder at
`gs://BUCKET/...` and must find every file there and none on local disk.

One in-memory object store reached the two ways the project's libraries reach GCS:
  * fsspec protocol `gs`/`gcs` (a `MemoryFileSystem` with its own store): what etils `epath`
    uses for `gs://` once routed to its fsspec backend, so `storage`, orbax's metadata and TFDS'
    file listings land here;
  * the GCS JSON API over HTTP (uploads, media reads with generations and ranges, conditional
    writes and deletes, listings), served on localhost from the same store: what TensorStore,
    orbax's array writer, speaks when `TENSORSTORE_GCS_HTTP_URL` points at it.
TensorFlow's own GCS client is not redirected: the project writes TensorFlow's files (summaries,
the data position) through a local temporary folder copied via `storage`, so TensorFlow never
opens a `gs://` path in these tests.
"""

from __future__ import annotations

import http.server
import importlib
import itertools
import json
import threading
import urllib.parse

import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem
from orbax.checkpoint._src.path import gcs_utils

_generations = itertools.count(1)


class FakeGCSFileSystem(MemoryFileSystem):
  """An in-memory fsspec filesystem under the `gs`/`gcs` protocols (its own store)."""

  protocol = ("gs", "gcs")
  store: dict = {}
  pseudo_dirs = [""]

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        path = path[len(prefix):]
    return super()._strip_protocol(path)

  @classmethod
  def reset(cls) -> None:
    cls.store.clear()
    cls.pseudo_dirs[:] = [""]


def generation(f: MemoryFile) -> int:
  """An object's generation: a new number whenever the stored object is replaced."""
  if getattr(f, "_fake_gcs_generation", None) is None:
    f._fake_gcs_generation = next(_generations)  # pylint: disable=protected-access
  return f._fake_gcs_generation  # pylint: disable=protected-access


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"
  lock = threading.Lock()

  def log_message(self, *args):  # quiet
    pass

  def _send(self, code: int, body: bytes = b"", headers: dict | None = None,
            content_type: str = "application/json") -> None:
    self.send_response(code)
    for k, v in (headers or {}).items():
      self.send_header(k, v)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def _json(self, code: int, obj) -> None:
    self._send(code, json.dumps(obj).encode())

  def _route(self):
    url = urllib.parse.urlsplit(self.path)
    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    parts = url.path.split("/")
    # /storage/v1/b/BUCKET/o[/OBJECT]  or  /upload/storage/v1/b/BUCKET/o
    upload = parts[1] == "upload"
    base = 2 if upload else 1
    bucket = urllib.parse.unquote(parts[base + 3])
    name = urllib.parse.unquote("/".join(parts[base + 5:])) if len(parts) > base + 5 else None
    if upload:
      name = query.get("name")
    return upload, bucket, name, query

  @staticmethod
  def _key(bucket: str, name: str) -> str:
    return f"/{bucket}/{name}"

  def _resource(self, bucket, name, f) -> dict:
    return {"kind": "storage#object", "bucket": bucket, "name": name,
            "size": str(len(f.getbuffer())), "generation": str(generation(f)),
            "metageneration": "1"}

  def _precondition_fails(self, query, f) -> bool:
    gen = generation(f) if f is not None else 0
    if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != gen:
      return True
    return False

  def do_GET(self):  # pylint: disable=invalid-name
    _, bucket, name, query = self._route()
    store = FakeGCSFileSystem.store
    with self.lock:
      if name is None:  # listing
        prefix = query.get("prefix", "")
        start, end = query.get("startOffset"), query.get("endOffset")
        root = f"/{bucket}/"
        items = []
        for key in sorted(store):
          if not key.startswith(root):
            continue
          obj = key[len(root):]
          if not obj.startswith(prefix) or (start and obj < start) or (end and obj >= end):
            continue
          items.append(self._resource(bucket, obj, store[key]))
        return self._json(200, {"kind": "storage#objects", "items": items})
      f = store.get(self._key(bucket, name))
      if f is None:
        return self._json(404, {"error": {"code": 404, "message": "No such object"}})
      if self._precondition_fails(query, f):
        return self._json(412, {"error": {"code": 412, "message": "Precondition Failed"}})
      if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == generation(f):
        return self._send(304, headers={"x-goog-generation": str(generation(f))})
      if query.get("alt") != "media":
        return self._json(200, self._resource(bucket, name, f))
      data = bytes(f.getbuffer())
      headers = {"x-goog-generation": str(generation(f))}
      rng = self.headers.get("Range")
      if rng and rng.startswith("bytes="):
        lo, _, hi = rng[6:].partition("-")
        if lo == "":  # suffix range
          lo = max(len(data) - int(hi), 0)
          hi = len(data) - 1
        lo, hi = int(lo), (int(hi) if hi else len(data) - 1)
        if lo >= len(data) and len(data):
          return self._json(416, {"error": {"code": 416, "message": "Range Not Satisfiable"}})
        headers["Content-Range"] = f"bytes {lo}-{min(hi, len(data) - 1)}/{len(data)}"
        return self._send(206, data[lo:hi + 1], headers, "application/octet-stream")
      return self._send(200, data, headers, "application/octet-stream")

  def do_POST(self):  # pylint: disable=invalid-name
    upload, bucket, name, query = self._route()
    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
    if not upload or not name:
      return self._json(400, {"error": {"code": 400, "message": "unsupported request"}})
    with self.lock:
      key = self._key(bucket, name)
      if self._precondition_fails(query, FakeGCSFileSystem.store.get(key)):
        return self._json(412, {"error": {"code": 412, "message": "Precondition Failed"}})
      f = MemoryFile(None, key, body)
      FakeGCSFileSystem.store[key] = f
      return self._json(200, self._resource(bucket, name, f))

  def do_DELETE(self):  # pylint: disable=invalid-name
    _, bucket, name, query = self._route()
    with self.lock:
      key = self._key(bucket, name)
      f = FakeGCSFileSystem.store.get(key)
      if f is None:
        return self._json(404, {"error": {"code": 404, "message": "No such object"}})
      if self._precondition_fails(query, f):
        return self._json(412, {"error": {"code": 412, "message": "Precondition Failed"}})
      del FakeGCSFileSystem.store[key]
      return self._send(204)


def serve() -> tuple[str, http.server.ThreadingHTTPServer]:
  """Starts the JSON API on a free localhost port; returns (base url, server)."""
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  server.daemon_threads = True
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture
def bucket(monkeypatch):
  """`gs://` served by fake_gcs for epath (fsspec backend) and TensorStore (JSON API)."""
  url, server = serve()
  monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", url)
  monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "offline")
  registry = importlib.import_module("fsspec.registry")._registry  # pylint: disable=protected-access
  for protocol in ("gs", "gcs"):
    monkeypatch.setitem(registry, protocol, FakeGCSFileSystem)
  # epath sends gs:// to TensorFlow's client when TF is installed, except for zonal buckets,
  # which go to fsspec; orbax asks the bucket's layout through google-cloud-storage.
  monkeypatch.setattr(gpath, "_is_zonal_gcs_bucket", lambda name: True)
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  FakeGCSFileSystem.reset()
  yield FakeGCSFileSystem.store
  server.shutdown()
  FakeGCSFileSystem.reset()
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
