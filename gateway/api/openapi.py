"""``/openapi.json`` built from the endpoint table and the schemas that validate requests."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from gateway.api.routing import STRING, Endpoint

_PATH_PARAM = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}


def _body_schema(schema: Any, components: dict[str, Any]) -> dict[str, Any]:
    generated = TypeAdapter(schema).json_schema(ref_template=_REF)
    components.update(generated.pop("$defs", {}))
    name = getattr(schema, "__name__", None)
    if name and (generated.get("type") == "object" or "oneOf" in generated):
        components[name] = generated
        return {"$ref": _REF.format(model=name)}
    return generated


def _operation(endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": dict(endpoint.path_params.get(name, STRING))}
        for name in _PATH_PARAM.findall(endpoint.path)
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.description,
            "schema": dict(p.schema),
        }
        for p in endpoint.query
    ]
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": endpoint.handler.__name__,
        "responses": {
            **{str(status): {"description": "success"} for status in (endpoint.status, *endpoint.also)},
            "4XX": error,
            "5XX": error,
        },
    }
    if endpoint.tag:
        operation["tags"] = [endpoint.tag]
    if params:
        operation["parameters"] = params
    if endpoint.scope is not None:
        operation["security"] = [{"bearer": []}]
        operation["description"] = f"Needs the {endpoint.scope.value} token (the admin token may call everything)."
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(endpoint.body, components)}},
        }
    return operation


def build_openapi(endpoints: Sequence[Endpoint], version: str) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "callgate", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
