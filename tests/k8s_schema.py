"""Validate generated Kubernetes objects against the real schemas in ../shared.

Core and built-in API objects use the Kubernetes OpenAPI v3 documents in
``../shared/k8s-openapi/``; custom resources use the CRDs in
``../shared/crds/``. Unknown fields are errors: every object schema that
lists ``properties`` gets ``additionalProperties: false`` unless it says
otherwise (maps such as labels keep their own ``additionalProperties``).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# ../shared beside the checkout (as CI has it), or $KUBEAI_SHARED_DIR.
SHARED = Path(os.environ.get("KUBEAI_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
OPENAPI = SHARED / "k8s-openapi"
if not OPENAPI.is_dir():
    raise RuntimeError(
        f"The Kubernetes schemas are missing: {OPENAPI} does not exist. The tests expect the "
        "project's shared/ folder beside the checkout (or KUBEAI_SHARED_DIR pointing at it)."
    )

# apiVersion -> OpenAPI file of its group/version.
_FILES = {
    "v1": "api__v1_openapi.json",
    "apps/v1": "apis__apps__v1_openapi.json",
    "autoscaling/v2": "apis__autoscaling__v2_openapi.json",
    "batch/v1": "apis__batch__v1_openapi.json",
    "networking.k8s.io/v1": "apis__networking.k8s.io__v1_openapi.json",
    "rbac.authorization.k8s.io/v1": "apis__rbac.authorization.k8s.io__v1_openapi.json",
    "scheduling.k8s.io/v1": "apis__scheduling.k8s.io__v1_openapi.json",
}


def _strict(schema):
    """A copy of ``schema`` where objects with listed properties allow no others."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and out.get("type", "object") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def _openapi(filename: str) -> dict:
    doc = json.loads((OPENAPI / filename).read_text())
    return _strict(doc)


@functools.lru_cache(maxsize=None)
def openapi_validator(api_version: str, definition: str) -> jsonschema.Validator:
    """A validator for component ``definition`` (e.g. ``io.k8s.api.core.v1.Pod``)."""
    doc = _openapi(_FILES[api_version])
    resource = Resource(contents=doc, specification=DRAFT202012)
    registry = Registry().with_resource("urn:k8s", resource)
    schema = {"$ref": f"urn:k8s#/components/schemas/{definition}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_core(obj: dict, definition: str | None = None, api_version: str | None = None) -> None:
    """Validate a built-in object (``apiVersion``/``kind`` taken from it when not given).

    ``definition`` defaults to ``io.k8s.api.<group>.<version>.<Kind>``; pass
    one (e.g. ``io.k8s.api.core.v1.Volume``) to check a fragment.
    """
    api_version = api_version or obj["apiVersion"]
    if definition is None:
        group, _, version = api_version.rpartition("/")
        group = (group or "core").split(".")[0]
        definition = f"io.k8s.api.{group}.{version}.{obj['kind']}"
    errors = sorted(openapi_validator(api_version, definition).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:20]]
        raise AssertionError(f"{definition} is invalid:\n" + "\n".join(lines))


def strict_copy(schema: dict) -> dict:
    """For CRD schemas (openAPIV3Schema): the same strictness, on a copy."""
    return _strict(copy.deepcopy(schema))


CRDS = SHARED / "crds"


@functools.lru_cache(maxsize=None)
def _crd_file(path: Path) -> dict[tuple[str, str, str], dict]:
    """(group, version, kind) -> openAPIV3Schema for the CRD(s) in one file."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the files are large
    schemas = {}
    for doc in yaml.load_all(path.read_text(), Loader=loader):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            schemas[(spec["group"], version["name"], spec["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.lru_cache(maxsize=None)
def crd_validator(api_version: str, kind: str) -> jsonschema.Validator:
    """The schema of ``kind`` in ``api_version``, from the file named for its group.

    CRD files are named ``<group>_<plural>.yaml``; where two define one CRD
    (MPIJob v1 and v2beta1), the version picks the file.
    """
    group, _, version = api_version.partition("/")
    for path in sorted(CRDS.glob(f"*/{group}_*.yaml")):
        schema = _crd_file(path).get((group, version, kind))
        if schema is not None:
            return jsonschema.Draft7Validator(strict_copy(schema))
    raise AssertionError(f"no CRD for {kind} {api_version} in {CRDS}")


def validate_custom(obj: dict) -> None:
    """Validate a custom resource against its CRD's schema, unknown fields being errors."""
    validator = crd_validator(obj["apiVersion"], obj["kind"])
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:20]]
        raise AssertionError(f"{obj['kind']} {obj['apiVersion']} is invalid:\n" + "\n".join(lines))
