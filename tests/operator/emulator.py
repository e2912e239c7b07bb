"""kmock's KubernetesEmulator with the API-server semantics the operator and kubectl rely on.

kmock serves discovery and the HTTP plumbing; this subclass takes over every object request and adds
what the unmodified emulator lacks (see docs/environment-notes.md): uid, resourceVersion,
creationTimestamp, generation bumped on spec changes, namespace from the URL, generateName, 409 on
name clashes and stale resourceVersions, label/field selectors, status subresource that leaves spec
alone (and the main resource leaving status alone), namespace listing, PUT, JSON/merge patches,
finalizers, deletecollection, watches that honour resourceVersion and timeoutSeconds, list kinds,
server-side Tables with CRD printer columns (kubectl get), core discovery's groupVersion "v1", and
custom objects checked against their CRD's openAPIV3Schema (422 on bad values; unknown fields pruned,
or refused with fieldValidation=Strict) with an OpenAPI v3 document so kubectl validates through it.

Still missing (none of it is needed by the operator or these tests):
- controllers: no Job controller, kubelet, TTL controller or ownerReference garbage collector (tests play
  the first two by patching status; the operator deletes its Jobs itself);
- CEL rules (x-kubernetes-validations), schema defaults, built-in kinds' schemas; admission; RBAC and
  authentication (any token passes);
- server-side apply, protobuf, /openapi/v2 and v3 for built-in kinds, aggregated discovery v2
  (kubectl falls back to the legacy endpoints), watch bookmarks, Tables in watch streams (`get -w`);
- strategic merge patch is applied as a JSON merge patch (lists replaced, not merged by key);
- set-based label selectors (`in`, `notin`), list pagination (limit/continue), DELETE options
  (preconditions, propagationPolicy, grace periods); watch history is bounded (older versions: 410).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
import secrets
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import jsonschema
import kmock
from kmock._internal import rendering

Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> Obj:
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "code": self.code, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    sub: str | None


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    return Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None,
                 "/".join(rest[2:]) or None)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    db: dict[tuple[str, str], dict[tuple[str | None, str], Obj]] = attrs.field(factory=dict)
    printer_columns: dict[tuple[str, str], list[Obj]] = attrs.field(factory=dict)
    openapi: dict[str, dict[str, Obj]] = attrs.field(factory=dict)
    pruned: list[str] = attrs.field(factory=list)
    history: deque[tuple[int, tuple[str, str], Obj]] = attrs.field(factory=lambda: deque(maxlen=20000))
    watchers: list[tuple[tuple[str, str], str | None, str | None, asyncio.Queue[Obj]]] = attrs.field(factory=list)
    counter: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    last_rv: int = 0
    unavailable: set[tuple[str, str]] = attrs.field(factory=set)
    """(group, plural) whose creates answer 503, as an API server that cannot take them now (a fault test's cue)."""
    refused: list[str] = attrs.field(factory=list)

    def setup(self, crds: list[Obj]) -> None:
        """Built-in kinds, the given CRDs (discovery + printer columns) and the default namespaces."""
        self.resources.load_bundled()
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                self.resources[kmock.resource(spec["group"], version["name"], spec["names"]["plural"])] = \
                    kmock.ResourceInfo(
                        kind=spec["names"]["kind"], singular=spec["names"]["singular"],
                        namespaced=spec["scope"] == "Namespaced", shortnames=set(spec["names"].get("shortNames", [])),
                        categories=set(spec["names"].get("categories", [])),
                        subresources=set(version.get("subresources", {})),
                        verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})
                self.printer_columns[(spec["group"], spec["names"]["plural"])] = \
                    version.get("additionalPrinterColumns", [])
                schema = copy.deepcopy(version.get("schema", {}).get("openAPIV3Schema", {"type": "object"}))
                schema["x-kubernetes-group-version-kind"] = [
                    {"group": spec["group"], "version": version["name"], "kind": spec["names"]["kind"]}]
                name = ".".join([*reversed(spec["group"].split(".")), version["name"], spec["names"]["kind"]])
                self.openapi.setdefault(f"apis/{spec['group']}/{version['name']}", {})[name] = schema
        for ns in ("default", "kube-system"):
            self._store(("", "namespaces"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                        None, ns, new=True)

    # Python-side access for tests (no HTTP, no watch event: use the HTTP API to change things).
    def get(self, group: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        obj = self.db.get((group, plural), {}).get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    def list(self, group: str, plural: str, namespace: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (ns, _), o in sorted(self.db.get((group, plural), {}).items())
                if namespace is None or ns == namespace]

    def _openapi(self, path: str) -> aiohttp.web.StreamResponse:
        """OpenAPI v3 for the CRDs only: enough for kubectl's client-side validation of our kinds."""
        gv = path[len("/openapi/v3"):].strip("/")
        if not gv:
            return aiohttp.web.json_response({"paths": {
                k: {"serverRelativeURL": f"/openapi/v3/{k}?hash={len(json.dumps(v))}"}
                for k, v in self.openapi.items()}})
        if gv not in self.openapi:
            return aiohttp.web.json_response(ApiError(404, "NotFound", path).body(), status=404)
        # A PATCH operation that lists fieldValidation tells kubectl to leave validation to the server.
        paths = {}
        for schema in self.openapi[gv].values():
            gvk = schema["x-kubernetes-group-version-kind"]
            paths[f"/{gv}/{gvk[0]['kind'].lower()}"] = {"patch": {
                "x-kubernetes-group-version-kind": gvk[0],
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]}}
        return aiohttp.web.json_response({"openapi": "3.0.0", "info": {"title": "emulator", "version": gv},
                                          "paths": paths, "components": {"schemas": self.openapi[gv]}})

    def _validate(self, route: Route, obj: Obj, strict: bool) -> None:
        """CRD objects against their schema, as the API server does: bad values -> 422; unknown fields ->
        422 with fieldValidation=Strict, else pruned (so a status field missing from the CRD is lost)."""
        gv = f"apis/{route.group}/{route.version}"
        schema = next((sc for sc in self.openapi.get(gv, {}).values()
                       if sc["x-kubernetes-group-version-kind"][0]["kind"] == obj.get("kind")), None)
        if schema is None:
            return
        unknown = _prune(obj, schema, "")
        self.pruned += [f'{obj.get("kind")}/{obj["metadata"].get("name")}: {u}' for u in unknown]
        if strict and unknown:
            raise ApiError(422, "Invalid", f'{obj.get("kind")} "{obj["metadata"].get("name")}" is invalid: '
                                           + ", ".join(f"{u}: field not declared in schema" for u in unknown))
        errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            raise ApiError(422, "Invalid", f'{obj.get("kind")} "{obj["metadata"].get("name")}" is invalid: '
                                           + "; ".join(f".{'.'.join(map(str, e.path))}: {e.message}" for e in errors))

    def _info(self, route: Route) -> kmock.ResourceInfo:
        for res in self.resources:
            if (res.group, res.version, res.plural) == (route.group, route.version, route.plural):
                return self.resources[res]
        raise ApiError(404, "NotFound", f"the server could not find the resource {route.plural}")

    async def _serve_version(self, request: rendering.Request) -> Any:
        body = await super()._serve_version(request)
        body["groupVersion"] = body["groupVersion"].lstrip("/")  # kmock says "/v1" for the core group
        for entry in body["resources"]:
            if "/" in entry["name"]:  # subresources carry no short names (kubectl warns of ambiguity)
                entry.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return body

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw.path.startswith("/openapi/v3"):
            return self._openapi(raw.path)
        route = parse_route(raw.path)
        if route is None:
            return await super().__call__(raw)
        try:
            info = self._info(route)
            body = await raw.read()
            data = json.loads(body) if body else None
            return await self._dispatch(raw, route, info, data)
        except ApiError as e:
            return aiohttp.web.json_response(e.body(), status=e.code)
        except (ValueError, KeyError, TypeError) as e:
            return aiohttp.web.json_response(ApiError(400, "BadRequest", repr(e)).body(), status=400)

    async def _dispatch(self, raw: aiohttp.web.BaseRequest, route: Route, info: kmock.ResourceInfo,
                        data: Any) -> aiohttp.web.StreamResponse:
        key = (route.group, route.plural)
        params = raw.query
        ns = route.namespace if info.namespaced else None
        table = "as=Table" in raw.headers.get("Accept", "")
        if raw.method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(raw, key, ns, route, params)
        if raw.method == "GET" and route.name is None:
            items = self._select(key, ns, params)
            if table:
                return aiohttp.web.json_response(self._table(key, items))
            return aiohttp.web.json_response({
                "apiVersion": f"{route.group}/{route.version}".lstrip("/"), "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(self.last_rv)}, "items": items})
        if raw.method == "DELETE" and route.name is None:
            for obj in self._select(key, ns, params):
                self._delete(key, ns, obj["metadata"]["name"])
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if raw.method == "POST" and route.name is None:
            if key in self.unavailable:
                self.refused.append(f"{route.plural}/{(data or {}).get('metadata', {}).get('name')}")
                raise ApiError(503, "ServiceUnavailable", f"{route.plural} cannot be created now")
            created = self._create(key, route, info, ns, data, params.get("fieldValidation") == "Strict")
            return aiohttp.web.json_response(created, status=201)
        if route.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{raw.method} on a collection")
        if raw.method == "GET":
            obj = self._existing(key, ns, route.name)
            return aiohttp.web.json_response(self._table(key, [obj]) if table else obj)
        # Every change below runs without an await: atomic on the event loop, no lock needed.
        if raw.method == "DELETE":
            return aiohttp.web.json_response(self._delete(key, ns, route.name))
        if raw.method in ("PATCH", "PUT"):
            ctype = raw.headers.get("Content-Type", "").split(";")[0]
            strict = params.get("fieldValidation") == "Strict"
            return aiohttp.web.json_response(self._update(key, route, info, ns, data, raw.method, ctype, strict))
        raise ApiError(405, "MethodNotAllowed", raw.method)

    def _existing(self, key: tuple[str, str], ns: str | None, name: str) -> Obj:
        obj = self.db.get(key, {}).get((ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{key[1]} "{name}" not found')
        return obj

    def _select(self, key: tuple[str, str], ns: str | None, params: Any) -> list[Obj]:
        labels = _parse_selector(params.get("labelSelector", ""))
        fields = _parse_selector(params.get("fieldSelector", ""))
        return [o for (ons, _), o in sorted(self.db.get(key, {}).items())
                if (ns is None or ons == ns) and _matches(o, labels, fields)]

    def _create(self, key: tuple[str, str], route: Route, info: kmock.ResourceInfo, ns: str | None,
                data: Obj, strict: bool = False) -> Obj:
        meta = data.setdefault("metadata", {})
        if info.namespaced:
            if meta.get("namespace") not in (None, ns):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = ns
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if (ns, meta["name"]) in self.db.get(key, {}):
            raise ApiError(409, "AlreadyExists", f'{route.plural} "{meta["name"]}" already exists')
        if "status" in info.subresources:
            data.pop("status", None)
        data["apiVersion"] = f"{route.group}/{route.version}".lstrip("/")
        data["kind"] = info.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
        self._validate(route, data, strict)
        return self._store(key, data, ns, meta["name"], new=True)

    def _update(self, key: tuple[str, str], route: Route, info: kmock.ResourceInfo, ns: str | None,
                data: Any, method: str, ctype: str, strict: bool = False) -> Obj:
        old = self._existing(key, ns, route.name or "")
        if method == "PUT":
            new = copy.deepcopy(data)
        elif ctype == "application/json-patch+json":
            new = _json_patch(old, data)
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            given_rv = (data.get("metadata") or {}).get("resourceVersion")
            if given_rv is not None and given_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified; please apply your changes "
                                                "to the latest version and try again")
            new = _merge(copy.deepcopy(old), data)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"{ctype} is not supported by this emulator")
        new_meta = new.setdefault("metadata", {})
        if method == "PUT" and new_meta.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise ApiError(409, "Conflict", "the object has been modified; please apply your changes "
                                            "to the latest version and try again")
        # Identity is the server's; subresources keep what belongs to the other half.
        for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
            if field in old["metadata"]:
                new_meta[field] = old["metadata"][field]
            else:
                new_meta.pop(field, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if route.sub == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        elif route.sub is not None:
            raise ApiError(404, "NotFound", f"subresource {route.sub} is not emulated")
        elif "status" in info.subresources:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        self._validate(route, new, strict)
        if _spec_of(new) != _spec_of(old):
            new_meta["generation"] = old["metadata"].get("generation", 1) + 1
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            self._store(key, new, ns, route.name or "")
            return self._remove(key, ns, route.name or "")
        if new == old:
            return old
        return self._store(key, new, ns, route.name or "")

    def _delete(self, key: tuple[str, str], ns: str | None, name: str) -> Obj:
        obj = self._existing(key, ns, name)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = now_iso()
                obj = self._store(key, obj, ns, name)
            return obj
        return self._remove(key, ns, name)

    def _store(self, key: tuple[str, str], obj: Obj, ns: str | None, name: str, new: bool = False) -> Obj:
        self.last_rv = next(self.counter)
        obj["metadata"]["resourceVersion"] = str(self.last_rv)
        obj["metadata"].setdefault("uid", str(uuid.uuid4()))
        obj["metadata"].setdefault("creationTimestamp", now_iso())
        self.db.setdefault(key, {})[(ns, name)] = obj
        self._emit(key, "ADDED" if new else "MODIFIED", obj)
        return obj

    def _remove(self, key: tuple[str, str], ns: str | None, name: str) -> Obj:
        obj = self.db[key].pop((ns, name))
        self.last_rv = next(self.counter)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.last_rv)
        self._emit(key, "DELETED", gone)
        return gone

    def _emit(self, key: tuple[str, str], type_: str, obj: Obj) -> None:
        event = {"type": type_, "object": copy.deepcopy(obj)}
        self.history.append((self.last_rv, key, event))
        for wkey, wns, _, queue in self.watchers:
            if wkey == key and (wns is None or wns == obj["metadata"].get("namespace")):
                queue.put_nowait(event)

    async def _watch(self, raw: aiohttp.web.BaseRequest, key: tuple[str, str], ns: str | None, route: Route,
                     params: Any) -> aiohttp.web.StreamResponse:
        labels = _parse_selector(params.get("labelSelector", ""))
        fields = _parse_selector(params.get("fieldSelector", ""))
        if route.name:
            fields["metadata.name"] = ("=", route.name)
        queue: asyncio.Queue[Obj] = asyncio.Queue()
        since = params.get("resourceVersion") or "0"
        if since == "0":
            backlog = [{"type": "ADDED", "object": copy.deepcopy(o)} for o in self._select(key, ns, {})]
        elif self.history and int(since) < self.history[0][0] - 1:
            backlog = [{"type": "ERROR", "object": ApiError(410, "Expired", "too old resource version").body()}]
        else:
            backlog = [ev for rv, k, ev in self.history if rv > int(since) and k == key]
        watcher = (key, ns, None, queue)
        self.watchers.append(watcher)  # registered before the first await: no event slips between
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(params.get("timeoutSeconds") or 3600)
        try:
            for event in backlog:
                queue.put_nowait(event)
            while loop.time() < deadline:
                if raw.transport is None or raw.transport.is_closing():
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=min(0.5, max(0.01, deadline - loop.time())))
                except TimeoutError:
                    continue
                obj = event["object"]
                ev_ns = obj.get("metadata", {}).get("namespace")
                if event["type"] != "ERROR" and (not _matches(obj, labels, fields) or (ns and ev_ns != ns)):
                    continue
                await response.write(json.dumps(event).encode() + b"\n")
                if event["type"] == "ERROR":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(watcher)
        return response

    def _table(self, key: tuple[str, str], items: list[Obj]) -> Obj:
        columns = self.printer_columns.get(key, [])
        defs = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        defs += [{"name": c["name"], "type": c["type"], "format": c.get("format", ""),
                  "description": c.get("description", ""), "priority": c.get("priority", 0)} for c in columns]
        if not columns:
            columns = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
            defs.append({"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0})
        rows = []
        for obj in items:
            cells = [obj["metadata"]["name"]]
            for c in columns:
                value = _json_path(obj, c["jsonPath"])
                cells.append(_age(value) if c["type"] == "date" and value else value)
            rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                   "metadata": obj["metadata"]}})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(self.last_rv)},
                "columnDefinitions": defs, "rows": rows}


def _prune(value: Any, schema: Obj, path: str) -> list[str]:
    """Drop fields the structural schema does not declare; return their paths."""
    unknown: list[str] = []
    if isinstance(value, dict) and schema.get("type", "object") == "object" \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(value):
            if props is not None and key in props:
                unknown += _prune(value[key], props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                unknown += _prune(value[key], extra, f"{path}.{key}")
            elif props is not None and path != ".metadata" and key not in ("apiVersion", "kind", "metadata"):
                unknown.append(f"{path}.{key}")
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            unknown += _prune(item, schema["items"], f"{path}[{i}]")
    return unknown


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = _merge(target.get(k), v)
    return target


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _json_patch(old: Obj, ops: list[Obj]) -> Obj:
    doc = copy.deepcopy(old)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        try:
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node[p]
            if op["op"] == "test":
                current = node[int(last)] if isinstance(node, list) else node.get(last)
                if current != op.get("value"):
                    raise ApiError(422, "Invalid", f"test failed at {op['path']}")
            elif op["op"] in ("add", "replace"):
                if isinstance(node, list):
                    if last == "-":
                        node.append(op["value"])
                    elif op["op"] == "add":
                        node.insert(int(last), op["value"])
                    else:
                        node[int(last)] = op["value"]
                else:
                    node[last] = op["value"]
            elif op["op"] == "remove":
                del node[int(last) if isinstance(node, list) else last]
            else:
                raise ApiError(422, "Invalid", f"unsupported op {op['op']}")
        except (KeyError, IndexError) as e:
            raise ApiError(422, "Invalid", f"path {op['path']} does not exist") from e
    return doc


def _parse_selector(text: str) -> dict[str, tuple[str, str | None]]:
    """``a=b,c!=d,e,!f`` -> {key: (op, value)}; enough for what kopf, kubectl and our client send."""
    out: dict[str, tuple[str, str | None]] = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            out[k.strip()] = ("!=", v.strip())
        elif "==" in term or "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            out[k.strip()] = ("=", v.strip())
        elif term.startswith("!"):
            out[term[1:]] = ("!", None)
        else:
            out[term] = ("exists", None)
    return out


def _matches(obj: Obj, labels: dict[str, tuple[str, str | None]], fields: dict[str, tuple[str, str | None]]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    for k, (op, v) in labels.items():
        if (op == "=" and have.get(k) != v) or (op == "!=" and have.get(k) == v) \
                or (op == "exists" and k not in have) or (op == "!" and k in have):
            return False
    for k, (op, v) in fields.items():
        value = _json_path(obj, "." + k)
        if (op == "=" and str(value) != v) or (op == "!=" and str(value) == v):
            return False
    return True


def _json_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _age(timestamp: str) -> str:
    then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int((dt.datetime.now(dt.UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


__all__ = ["ApiError", "ClusterEmulator", "parse_route"]
