"""Catalog entries and their validation.

Entries are plain frozen dataclasses; :func:`image_from_dict` and friends
turn untrusted JSON (the REST API, the admin form, initial config) into
entries or raise :class:`~jupyter_kubeai.service.errors.InvalidInput` with
a message that names the field and says what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import InvalidInput

# A catalog name: a DNS label, so it can be a form value, a label and a slug.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A container image reference: [registry[:port]/]path[:tag][@digest], no spaces.
IMAGE_RE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
# A Kubernetes quantity (CPU or memory): 500m, 2, 1.5, 4Gi, 512M ...
QUANTITY_RE = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
# An extended resource name, e.g. nvidia.com/gpu, amd.com/gpu, gpu.intel.com/i915.
RESOURCE_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$")
# A label key ([prefix/]name) and value, as Kubernetes allows them.
LABEL_KEY_RE = re.compile(r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?)?$")

_SUFFIX = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def quantity_value(quantity: str) -> Decimal:
    """The number a Kubernetes quantity stands for (cores or bytes)."""
    match = QUANTITY_RE.match(quantity)
    if not match:
        raise ValueError(quantity)
    return Decimal(match.group(1)) * _SUFFIX[match.group(3) or ""]


@dataclass(frozen=True)
class Image:
    """An image users may start their server (and jobs) from."""

    name: str
    image: str
    display_name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    default: bool = False
    deprecated: bool = False
    #: With ``deprecated``: the image to use instead (its catalog name).
    replacement: str = ""
    #: Hub groups allowed to use it; empty means everyone.
    groups: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.display_name or self.name


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def to_k8s(self) -> dict:
        out = {"key": self.key} if self.key else {}
        out["operator"] = self.operator
        if self.operator == "Equal":
            out["value"] = self.value
        if self.effect:
            out["effect"] = self.effect
        return out


@dataclass(frozen=True)
class Placement:
    """Where pods of a profile go: node selector and tolerations."""

    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True)
class Profile:
    """A size: CPU, memory and GPUs, and where such pods are scheduled."""

    name: str
    display_name: str = ""
    description: str = ""
    cpu_request: str = "500m"
    cpu_limit: str = "1"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    #: GPUs given by default; 0 for a CPU-only profile.
    gpus: int = 0
    #: The most GPUs a user may pick (at least ``gpus``); users choose 1..max.
    max_gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    placement: Placement = field(default_factory=Placement)
    #: Per-project (hub group) placement, e.g. the project's node pool.
    project_placement: tuple[tuple[str, Placement], ...] = ()
    default: bool = False
    groups: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.display_name or self.name

    @property
    def gpu_choices(self) -> tuple[int, ...]:
        """The GPU counts a user may pick with this profile."""
        if self.gpus == 0:
            return (0,)
        return tuple(range(1, self.max_gpus + 1))

    def summary(self) -> str:
        text = f"{self.cpu_limit} CPU, {self.memory_limit} memory"
        if self.gpus:
            most = f"up to {self.max_gpus}" if self.max_gpus > self.gpus else str(self.gpus)
            text += f", {most} GPU ({self.gpu_resource})"
        return text


@dataclass(frozen=True)
class ImageRule:
    """Lets some groups type an image of their own, if it matches ``pattern``."""

    name: str
    pattern: str
    description: str = ""
    groups: tuple[str, ...] = ()


# --- validation from untrusted JSON ---------------------------------------------------------


def _fail(kind: str, name: str, message: str):
    where = f"{kind} {name!r}" if name else kind
    raise InvalidInput(f"{where}: {message}")


def _known_fields(cls, data: dict, kind: str, name: str, extra: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        raise InvalidInput(f"a {kind} must be a JSON object")
    allowed = {f.name for f in fields(cls)} | set(extra)
    unknown = sorted(set(data) - allowed)
    if unknown:
        _fail(kind, name, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _name(data: dict, kind: str) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            f"{kind} name {name!r} is not valid: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def _text(data: dict, key: str, kind: str, name: str, *, limit: int = 2000) -> str:
    value = data.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > limit:
        _fail(kind, name, f"{key} must be text of at most {limit} characters")
    return value


def _bool(data: dict, key: str, kind: str, name: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        _fail(kind, name, f"{key} must be true or false")
    return value


def _groups(data: dict, kind: str, name: str) -> tuple[str, ...]:
    groups = data.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
        _fail(kind, name, "groups must be a list of hub group names (empty: everyone)")
    return tuple(sorted({g.strip() for g in groups}))


def _str_list(data: dict, key: str, kind: str, name: str) -> tuple[str, ...]:
    items = data.get(key) or []
    if not isinstance(items, list) or not all(isinstance(t, str) and 0 < len(t) <= 63 for t in items):
        _fail(kind, name, f"{key} must be a list of short texts")
    return tuple(items)


def image_from_dict(data: dict) -> Image:
    _known_fields(Image, data, "image", str(data.get("name", "")) if isinstance(data, dict) else "")
    name = _name(data, "image")
    ref = data.get("image")
    if not isinstance(ref, str) or not IMAGE_RE.match(ref):
        _fail("image", name, f"image reference {ref!r} is not valid (e.g. quay.io/org/lab:2024.1 or python:3.11)")
    replacement = _text(data, "replacement", "image", name, limit=63)
    deprecated = _bool(data, "deprecated", "image", name)
    if replacement and not NAME_RE.match(replacement):
        _fail("image", name, "replacement must be the catalog name of another image")
    if replacement == name:
        _fail("image", name, "an image cannot replace itself")
    if replacement and not deprecated:
        _fail("image", name, "only a deprecated image has a replacement")
    default = _bool(data, "default", "image", name)
    if default and deprecated:
        _fail("image", name, "a deprecated image cannot be the default")
    return Image(
        name=name,
        image=ref,
        display_name=_text(data, "display_name", "image", name, limit=200),
        description=_text(data, "description", "image", name),
        tags=_str_list(data, "tags", "image", name),
        default=default,
        deprecated=deprecated,
        replacement=replacement,
        groups=_groups(data, "image", name),
    )


def _quantity(data: dict, key: str, default: str, name: str) -> str:
    value = data.get(key, default)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not QUANTITY_RE.match(value):
        _fail("profile", name, f"{key} {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    try:
        if quantity_value(value) <= 0:
            _fail("profile", name, f"{key} must be more than 0")
    except InvalidOperation:
        _fail("profile", name, f"{key} {value!r} is not a number")
    return value


def _placement(data: Any, name: str, where: str) -> Placement:
    if data is None:
        return Placement()
    if not isinstance(data, dict) or set(data) - {"node_selector", "tolerations"}:
        _fail("profile", name, f"{where} must be an object with node_selector and/or tolerations")
    selector = data.get("node_selector") or {}
    if not isinstance(selector, dict):
        _fail("profile", name, f"{where}.node_selector must be an object of label: value")
    for key, value in selector.items():
        if not LABEL_KEY_RE.match(str(key)) or not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
            _fail("profile", name, f"{where}.node_selector {key!r}: {value!r} is not a valid label")
    tolerations = []
    for item in data.get("tolerations") or []:
        if not isinstance(item, dict) or set(item) - {"key", "operator", "value", "effect"}:
            _fail("profile", name, f"{where}.tolerations entries have key, operator, value, effect")
        operator = item.get("operator", "Equal")
        effect = item.get("effect", "")
        if operator not in ("Equal", "Exists"):
            _fail("profile", name, f"toleration operator must be Equal or Exists, not {operator!r}")
        if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            _fail("profile", name, f"toleration effect must be NoSchedule, PreferNoSchedule or NoExecute, not {effect!r}")
        key = item.get("key", "")
        if key and not LABEL_KEY_RE.match(key):
            _fail("profile", name, f"toleration key {key!r} is not valid")
        value = item.get("value", "")
        if not isinstance(value, str) or (value and not LABEL_VALUE_RE.match(value)):
            _fail("profile", name, f"toleration value {value!r} is not valid")
        tolerations.append(Toleration(key=key, operator=operator, value=value if operator == "Equal" else "", effect=effect))
    return Placement(node_selector=tuple(sorted(selector.items())), tolerations=tuple(tolerations))


def profile_from_dict(data: dict) -> Profile:
    _known_fields(Profile, data, "profile", str(data.get("name", "")) if isinstance(data, dict) else "")
    name = _name(data, "profile")
    cpu_request = _quantity(data, "cpu_request", "500m", name)
    cpu_limit = _quantity(data, "cpu_limit", "1", name)
    memory_request = _quantity(data, "memory_request", "1Gi", name)
    memory_limit = _quantity(data, "memory_limit", "2Gi", name)
    if quantity_value(cpu_request) > quantity_value(cpu_limit):
        _fail("profile", name, f"cpu_request {cpu_request} is more than cpu_limit {cpu_limit}")
    if quantity_value(memory_request) > quantity_value(memory_limit):
        _fail("profile", name, f"memory_request {memory_request} is more than memory_limit {memory_limit}")
    gpus = data.get("gpus", 0)
    max_gpus = data.get("max_gpus")
    if max_gpus is None or (type(max_gpus) is int and max_gpus == 0):
        # Not given (absent, null, or 0 as a form's empty default): the count itself, no choice above it.
        max_gpus = gpus
    for key, value in (("gpus", gpus), ("max_gpus", max_gpus)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 64:
            _fail("profile", name, f"{key} must be a whole number from 0 to 64")
    if gpus == 0 and max_gpus:
        _fail("profile", name, "a CPU-only profile (gpus 0) cannot have max_gpus")
    if max_gpus < gpus:
        _fail("profile", name, f"max_gpus {max_gpus} is less than gpus {gpus}")
    gpu_resource = data.get("gpu_resource", "nvidia.com/gpu")
    if not isinstance(gpu_resource, str) or not RESOURCE_RE.match(gpu_resource):
        _fail("profile", name, f"gpu_resource {gpu_resource!r} is not an extended resource name (e.g. nvidia.com/gpu)")
    project_placement = data.get("project_placement") or {}
    if not isinstance(project_placement, dict):
        _fail("profile", name, "project_placement must be an object of group: placement")
    return Profile(
        name=name,
        display_name=_text(data, "display_name", "profile", name, limit=200),
        description=_text(data, "description", "profile", name),
        cpu_request=cpu_request,
        cpu_limit=cpu_limit,
        memory_request=memory_request,
        memory_limit=memory_limit,
        gpus=gpus,
        max_gpus=max_gpus,
        gpu_resource=gpu_resource,
        placement=_placement(data.get("placement"), name, "placement"),
        project_placement=tuple(
            sorted((str(g), _placement(p, name, f"project_placement[{g}]")) for g, p in project_placement.items())
        ),
        default=_bool(data, "default", "profile", name),
        groups=_groups(data, "profile", name),
    )


def image_rule_from_dict(data: dict) -> ImageRule:
    _known_fields(ImageRule, data, "image rule", str(data.get("name", "")) if isinstance(data, dict) else "")
    name = _name(data, "image rule")
    pattern = data.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        _fail("image rule", name, "pattern must be a regular expression the typed image must match")
    try:
        re.compile(pattern)
    except re.error as e:
        _fail("image rule", name, f"pattern is not a valid regular expression: {e}")
    groups = _groups(data, "image rule", name)
    if not groups:
        _fail("image rule", name, "list the groups allowed to type their own image")
    return ImageRule(name=name, pattern=pattern, description=_text(data, "description", "image rule", name), groups=groups)


def to_dict(entry) -> dict:
    """JSON of an entry, the same shape ``*_from_dict`` accepts."""
    data = asdict(entry)
    if isinstance(entry, Profile):
        data["placement"] = _placement_dict(entry.placement)
        data["project_placement"] = {g: _placement_dict(p) for g, p in entry.project_placement}
    for key in ("tags", "groups"):
        if key in data:
            data[key] = list(data[key])
    return data


def _placement_dict(placement: Placement) -> dict:
    return {
        "node_selector": dict(placement.node_selector),
        "tolerations": [t.to_k8s() for t in placement.tolerations],
    }
