#!/usr/bin/env python3
"""Build a single-layer OCI image and push it to a registry, without Docker.

The layer is made from a directory tree (--rootfs DIR) and/or single files
(--file SRC:DEST[:MODE]), directories (--dir DEST[:MODE]) and symbolic links
(--symlink DEST:TARGET), applied in that order (later wins). Every entry
is owned by root (uid/gid 0), keeps its mode (or the one given), has mtime 0 and
the entries are sorted, so the same input always gives the same layer, config
and manifest digests.

The image is pushed with the Registry HTTP API v2 over plain HTTP (--https for
TLS; no authentication): HEAD to skip blobs the registry already has, POST
/v2/<name>/blobs/uploads/ then PUT <location>?digest=..., and PUT of the
manifest (application/vnd.oci.image.manifest.v1+json) under the tag.

stdout gets two lines: the digest reference (HOST/NAME@sha256:...) and, last,
the tag reference (HOST/NAME:TAG). Progress and errors go to stderr; any
failure exits non-zero.

Python 3 standard library only.
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import posixpath
import re
import ssl
import stat
import sys
import tarfile
import urllib.parse

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = "1970-01-01T00:00:00Z"


class Fail(Exception):
    """An error reported as one line on stderr, exit status 1."""


def log(msg):
    print(f"oci-image: {msg}", file=sys.stderr, flush=True)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# The layer


def parse_mode(text, what):
    try:
        mode = int(text, 8)
    except ValueError:
        raise Fail(f"{what}: mode {text!r} is not octal (e.g. 0755)") from None
    if not 0 <= mode <= 0o7777:
        raise Fail(f"{what}: mode {text!r} out of range")
    return mode


def norm_dest(dest, what):
    """'/etc/passwd' -> 'etc/passwd'; refuses '..' and empty paths."""
    if not dest.startswith("/"):
        raise Fail(f"{what}: destination {dest!r} must be absolute (start with /)")
    clean = posixpath.normpath(dest).lstrip("/")
    if clean in ("", ".") or clean.split("/")[0] == "..":
        raise Fail(f"{what}: bad destination {dest!r}")
    return clean


class Layer:
    """The entries of the layer, keyed by path without leading slash."""

    def __init__(self):
        self.entries = {}  # path -> (kind, mode, payload); kind: dir|file|symlink

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            entry = self.entries.get(parent)
            if entry is None:
                self.entries[parent] = ("dir", 0o755, None)
            elif entry[0] != "dir":
                raise Fail(f"/{parent} is a {entry[0]} but /{path} is inside it")

    def add(self, path, kind, mode, payload):
        """Add or replace an entry; a later entry wins (the same path cannot be a directory and not)."""
        self._parents(path)
        old = self.entries.get(path)
        if old is not None and (old[0] == "dir") != (kind == "dir"):
            raise Fail(f"/{path} given both as a directory and as a {kind if old[0] == 'dir' else old[0]}")
        self.entries[path] = (kind, mode, payload)

    def add_file(self, src, path, mode=None):
        """A regular file (symlinks followed), with SRC's mode unless MODE is given."""
        try:
            with open(src, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise Fail(f"{src}: not a regular file")
                data = f.read()
        except OSError as e:
            raise Fail(f"{src}: {e.strerror}") from None
        self.add(path, "file", stat.S_IMODE(st.st_mode) if mode is None else mode, data)

    def add_tree(self, root):
        if not os.path.isdir(root):
            raise Fail(f"--rootfs {root}: not a directory")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            base = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
            if base:
                self.add(base, "dir", stat.S_IMODE(os.stat(dirpath).st_mode), None)
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                src = os.path.join(dirpath, name)
                path = f"{base}/{name}" if base else name
                st = os.lstat(src)
                if stat.S_ISLNK(st.st_mode):
                    self.add(path, "symlink", 0o777, os.readlink(src))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(src, path)
                else:
                    raise Fail(f"{src}: only regular files, directories and symlinks are supported")

    def tar(self):
        """The uncompressed tar, deterministic: sorted, root-owned, mtime 0."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries, key=lambda p: p.split("/")):
                kind, mode, payload = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode = mode
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = payload
                    tar.addfile(info)
                else:
                    info.type = tarfile.REGTYPE
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        return buf.getvalue()


def gzip_deterministic(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Config and manifest


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def parse_kv(items, what):
    out = {}
    for item in items:
        if "=" not in item or item.startswith("="):
            raise Fail(f"{what} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key] = value
    return out


def parse_port(text):
    m = re.fullmatch(r"(\d{1,5})(?:/(tcp|udp|sctp))?", text)
    if not m or not 0 < int(m.group(1)) < 65536:
        raise Fail(f"--expose {text!r}: expected PORT or PORT/tcp|udp|sctp")
    return f"{int(m.group(1))}/{m.group(2) or 'tcp'}"


def parse_argv(text, what):
    """A JSON array of strings, or a plain string taken as one argument."""
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise Fail(f"{what}: bad JSON array: {e}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Fail(f"{what}: expected a JSON array of strings")
        return value
    return [text]


def image_blobs(args, layer_tar):
    layer_gz = gzip_deterministic(layer_tar)
    env = parse_kv(args.env, "--env")
    env_list = [f"{k}={v}" for k, v in env.items()]
    if "PATH" not in env and not args.no_default_path:
        env_list.insert(0, DEFAULT_PATH)
    cfg = {}
    if env_list:
        cfg["Env"] = env_list
    if args.entrypoint is not None:
        cfg["Entrypoint"] = parse_argv(args.entrypoint, "--entrypoint")
    if args.cmd is not None:
        cfg["Cmd"] = parse_argv(args.cmd, "--cmd")
    if args.user:
        cfg["User"] = args.user
    if args.workdir:
        if not args.workdir.startswith("/"):
            raise Fail("--workdir must be absolute")
        cfg["WorkingDir"] = args.workdir
    if args.expose:
        cfg["ExposedPorts"] = {parse_port(p): {} for p in args.expose}
    labels = parse_kv(args.label, "--label")
    if labels:
        cfg["Labels"] = labels
    config = {
        "created": EPOCH,
        "architecture": args.arch,
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created": EPOCH, "created_by": "scripts/oci-image.py"}],
    }
    config_bytes = canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": sha256(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": sha256(layer_gz), "size": len(layer_gz)}],
    }
    annotations = {k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")}
    if annotations:
        manifest["annotations"] = annotations
    return canonical(manifest), config_bytes, layer_gz


def write_layout(path, manifest, blobs, tag):
    """An OCI image layout directory (what umoci, skopeo oci:, ctr import read)."""
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    for data in [manifest] + blobs:
        name = os.path.join(path, "blobs", "sha256", sha256(data).split(":", 1)[1])
        with open(name, "wb") as f:
            f.write(data)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    desc = {"mediaType": MEDIA_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}
    index_path = os.path.join(path, "index.json")
    index = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"] = [m for m in index.get("manifests", [])
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    index["manifests"].append(desc)
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)


# ---------------------------------------------------------------------------
# The registry


REF_RE = re.compile(
    r"(?P<host>[A-Za-z0-9.-]+(?::\d+)?|\[[0-9A-Fa-f:]+\](?::\d+)?)/"
    r"(?P<name>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r":(?P<tag>[A-Za-z0-9_{][A-Za-z0-9_.{}-]{0,127})"
)


def parse_ref(ref):
    m = REF_RE.fullmatch(ref)
    if not m:
        raise Fail(f"reference {ref!r}: expected HOST[:PORT]/NAME:TAG (NAME lower case, e.g. 127.0.0.1:5000/prenv:0.1.0)")
    return m.group("host"), m.group("name"), m.group("tag")


class Registry:
    def __init__(self, host, https, timeout):
        self.host = host
        self.https = https
        self.timeout = timeout
        self.scheme = "https" if https else "http"

    def request(self, method, url, body=None, headers=None):
        """One request; url is a path or an absolute URL (Location headers may be either)."""
        parsed = urllib.parse.urlsplit(url)
        host = parsed.netloc or self.host
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        if parsed.scheme and parsed.scheme != self.scheme:
            raise Fail(f"registry redirected to {url}: scheme {parsed.scheme} not supported here")
        if self.https:
            conn = http.client.HTTPSConnection(host, timeout=self.timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data
        except (OSError, http.client.HTTPException) as e:
            hint = " (is a registry listening there?)" if isinstance(e, ConnectionRefusedError) else ""
            raise Fail(f"{method} {self.scheme}://{host}{path}: {e}{hint}") from None
        finally:
            conn.close()

    @staticmethod
    def describe(status, data):
        try:
            errors = json.loads(data).get("errors") or []
            text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            text = data[:300].decode(errors="replace").strip()
        return f"HTTP {status}" + (f" ({text})" if text else "")

    def check(self):
        status, _, data = self.request("GET", "/v2/")
        if status == 401:
            raise Fail(f"registry {self.host} wants authentication; only anonymous push is supported")
        if status != 200:
            raise Fail(f"{self.scheme}://{self.host}/v2/ is not a Registry API v2 endpoint: {self.describe(status, data)}")

    def push_blob(self, name, data, what):
        digest = sha256(data)
        status, _, _ = self.request("HEAD", f"/v2/{name}/blobs/{digest}")
        if status == 200:
            log(f"{what} {digest} ({len(data)} bytes): already in the registry")
            return
        status, headers, body = self.request("POST", f"/v2/{name}/blobs/uploads/", body=b"",
                                             headers={"Content-Length": "0"})
        if status != 202 or not headers.get("Location"):
            raise Fail(f"starting the upload of {what} to {self.host}/{name}: {self.describe(status, body)}")
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(digest, safe='')}"
        self.put(url, data, "application/octet-stream", what,
                 f"uploading {what} {digest} to {self.host}/{name}")
        log(f"{what} {digest} ({len(data)} bytes): pushed")

    def push_manifest(self, name, tag, manifest):
        digest = self.put(f"/v2/{name}/manifests/{tag}", manifest, MEDIA_MANIFEST, "the manifest",
                          f"putting the manifest {self.host}/{name}:{tag}")
        log(f"manifest {digest} ({len(manifest)} bytes): pushed as {self.host}/{name}:{tag}")

    def put(self, url, data, content_type, what, doing):
        """PUT data, expect 201 and, when the registry names one, the digest we computed."""
        digest = sha256(data)
        status, headers, body = self.request("PUT", url, body=data, headers={
            "Content-Type": content_type, "Content-Length": str(len(data))})
        if status != 201:
            raise Fail(f"{doing}: {self.describe(status, body)}")
        got = headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise Fail(f"registry stored {what} as {got}, expected {digest}")
        return digest


# ---------------------------------------------------------------------------


def main(argv):
    p = argparse.ArgumentParser(
        prog="oci-image.py",
        description="Build a deterministic single-layer OCI image from files and push it to a "
                    "registry (Registry API v2, plain HTTP, no auth). Prints the digest reference, "
                    "then the tag reference as the last line of stdout.",
        epilog="In REF's tag, '{digest}' is replaced by the first 12 hex digits of the manifest "
               "digest (a content-addressed tag), e.g. 127.0.0.1:5000/app:{digest}.")
    p.add_argument("ref", metavar="REF", help="HOST[:PORT]/NAME:TAG to push to")
    p.add_argument("--rootfs", metavar="DIR", help="put this directory tree at / (modes kept, owner root)")
    p.add_argument("--file", action="append", default=[], metavar="SRC:DEST[:MODE]",
                   help="add file SRC at absolute path DEST (octal MODE, default: SRC's); repeatable, wins over --rootfs")
    p.add_argument("--dir", action="append", default=[], metavar="DEST[:MODE]",
                   help="add a directory (default mode 0755); repeatable")
    p.add_argument("--symlink", action="append", default=[], metavar="DEST:TARGET",
                   help="add a symbolic link DEST pointing to TARGET; repeatable")
    p.add_argument("--entrypoint", help='JSON array (["/prenv"]) or a single path')
    p.add_argument("--cmd", help='JSON array (["serve"]) or a single argument')
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--no-default-path", action="store_true",
                   help=f"do not add {DEFAULT_PATH} when no --env PATH=... is given")
    p.add_argument("--user", help="e.g. 65532:65532")
    p.add_argument("--workdir", help="working directory (absolute)")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]", help="repeatable")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="repeatable; org.opencontainers.image.* labels also become manifest annotations")
    p.add_argument("--arch", default="amd64", help="config architecture (default amd64)")
    p.add_argument("--oci-layout", metavar="DIR", help="also write an OCI image layout to DIR")
    p.add_argument("--no-push", action="store_true", help="build (and write --oci-layout) only")
    p.add_argument("--https", action="store_true", help="talk TLS to the registry (default plain HTTP)")
    p.add_argument("--timeout", type=float, default=120, help="seconds per HTTP request (default 120)")
    args = p.parse_args(argv)

    host, name, tag_template = parse_ref(args.ref)
    if not (args.rootfs or args.file or args.dir or args.symlink):
        raise Fail("nothing to put in the image: give --rootfs, --file, --dir or --symlink")

    layer = Layer()
    if args.rootfs:
        layer.add_tree(args.rootfs)
    for spec in args.file:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise Fail(f"--file {spec!r}: expected SRC:DEST[:MODE]")
        mode = parse_mode(parts[2], f"--file {spec}") if len(parts) == 3 else None
        layer.add_file(parts[0], norm_dest(parts[1], f"--file {spec}"), mode)
    for spec in args.dir:
        dest, _, mode = spec.partition(":")
        layer.add(norm_dest(dest, f"--dir {spec}"), "dir",
                  parse_mode(mode, f"--dir {spec}") if mode else 0o755, None)
    for spec in args.symlink:
        dest, _, target = spec.partition(":")
        if not target:
            raise Fail(f"--symlink {spec!r}: expected DEST:TARGET")
        layer.add(norm_dest(dest, f"--symlink {spec}"), "symlink", 0o777, target)

    layer_tar = layer.tar()
    manifest, config, layer_gz = image_blobs(args, layer_tar)
    digest = sha256(manifest)
    tag = tag_template.replace("{digest}", digest.split(":", 1)[1][:12])
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise Fail(f"tag {tag!r} is not a valid tag")
    log(f"{len(layer.entries)} entries, layer {len(layer_tar)} bytes ({len(layer_gz)} gzipped), manifest {digest}")

    if args.oci_layout:
        write_layout(args.oci_layout, manifest, [config, layer_gz], tag)
        log(f"OCI layout written to {args.oci_layout} (ref name {tag})")
    if not args.no_push:
        reg = Registry(host, args.https, args.timeout)
        reg.check()
        reg.push_blob(name, layer_gz, "layer")
        reg.push_blob(name, config, "config")
        reg.push_manifest(name, tag, manifest)
    print(f"{host}/{name}@{digest}")
    print(f"{host}/{name}:{tag}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Fail as e:
        print(f"oci-image: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
