"""The admin page (``/services/kubeai/admin/``): the catalog in a browser, and the cluster check.

Hub admins list, create, edit, deprecate and delete images, sizes and
image rules, and see how many running servers use each. Forms post to the
page itself; each form becomes the same JSON the REST API takes, checked by
the same code, and errors are shown above the form with what was typed.
The "Cluster check" section runs ``kubeai doctor``'s checks on request
(``?doctor=1``): they ask the API server, so not at every page view.

The page says "size" where the catalog and its API say "profile", and
labels where they say field names: :func:`page_words` rewrites the
catalog's messages (never the names quoted in them) for the page. It
looks like the hub's own pages: it links the hub's stylesheet.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from ..catalog.model import to_dict
from ..errors import Forbidden, InvalidInput, KubeAIError
from .catalog_handlers import KINDS, usage_counts
from .handlers import BaseHandler
from .ops_handlers import run_doctor

#: The catalog's words (kinds, JSON fields) -> the page's (its headings and form labels).
PAGE_WORDS = {
    "profiles": "sizes", "profile": "size", "Profile": "Size",
    "max_gpus": "Max GPUs", "gpus": "GPUs", "gpu_resource": "GPU resource",
    "cpu_request": "CPU request", "cpu_limit": "CPU limit",
    "memory_request": "Memory request", "memory_limit": "Memory limit",
    "display_name": "Display name", "node_selector": "Node selector",
}
_PAGE_WORD = re.compile(r"\b(" + "|".join(sorted(map(re.escape, PAGE_WORDS), key=len, reverse=True)) + r")\b")
_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")


def page_words(message: str) -> str:
    """A catalog message in the page's words; quoted parts (names, values typed) are left as they are."""
    parts = _QUOTED.split(message)
    text = "".join(part if i % 2 else _PAGE_WORD.sub(lambda m: PAGE_WORDS[m.group(1)], part) for i, part in enumerate(parts))
    return text[:1].upper() + text[1:]  # a sentence on the page (the catalog's start with the kind)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _int(text: str, field: str) -> int:
    try:
        return int(text or 0)
    except ValueError:
        raise InvalidInput(f"{field} must be a whole number, not {text!r}") from None


def parse_node_selector(text: str) -> dict:
    """``key=value`` per line."""
    selector = {}
    for line in _lines(text):
        key, sep, value = line.partition("=")
        if not sep:
            raise InvalidInput(f"node selector line {line!r}: write key=value")
        selector[key.strip()] = value.strip()
    return selector


def parse_tolerations(text: str) -> list[dict]:
    """``key=value:Effect`` (Equal) or ``key:Effect`` (Exists) per line."""
    tolerations = []
    for line in _lines(text):
        target, _, effect = line.rpartition(":") if ":" in line else (line, "", "")
        key, sep, value = target.partition("=")
        toleration = {"key": key.strip(), "operator": "Equal" if sep else "Exists"}
        if sep:
            toleration["value"] = value.strip()
        if effect.strip():
            toleration["effect"] = effect.strip()
        tolerations.append(toleration)
    return tolerations


def form_to_entry(collection: str, form: dict[str, str]) -> dict:
    """A submitted admin form -> the JSON the REST API takes for that kind."""
    get = lambda key: form.get(key, "").strip()  # noqa: E731
    if collection == "images":
        return {
            "name": get("name"),
            "display_name": get("display_name"),
            "image": get("image"),
            "description": get("description"),
            "tags": _split(get("tags")),
            "groups": _split(get("groups")),
            "default": form.get("default") == "on",
            "deprecated": form.get("deprecated") == "on",
            "replacement": get("replacement") if form.get("deprecated") == "on" else "",
        }
    if collection == "profiles":
        return {
            "name": get("name"),
            "display_name": get("display_name"),
            "description": get("description"),
            "cpu_request": get("cpu_request"),
            "cpu_limit": get("cpu_limit"),
            "memory_request": get("memory_request"),
            "memory_limit": get("memory_limit"),
            "gpus": _int(get("gpus"), "GPUs"),
            # Empty: not given, so the catalog's default (the size's own GPU count).
            **({"max_gpus": _int(get("max_gpus"), "Max GPUs")} if get("max_gpus") else {}),
            "gpu_resource": get("gpu_resource") or "nvidia.com/gpu",
            "placement": {
                "node_selector": parse_node_selector(form.get("node_selector", "")),
                "tolerations": parse_tolerations(form.get("tolerations", "")),
            },
            "groups": _split(get("groups")),
            "default": form.get("default") == "on",
        }
    return {"name": get("name"), "pattern": get("pattern"), "description": get("description"), "groups": _split(get("groups"))}


class AdminPageHandler(BaseHandler):
    page = True

    admin_only = True

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, Forbidden):
            self.set_status(403)
            self.finish(self.render_string("forbidden.html", **self._common(), message=error.message))
            return
        super().write_error(status_code, **kwargs)

    def _common(self) -> dict:
        return {
            "identity": self.identity,
            "prefix": self.service.service_prefix,
            "hub_home": self.hub_auth.hub_prefix + "home",
        }

    async def get(self):
        doctor = None
        if self.get_argument("doctor", ""):
            try:
                doctor = await run_doctor(self.service, self.hub_auth)
            except KubeAIError as e:
                doctor = {"status": "fail", "checks": [], "error": e.message}
        await self._render(doctor=doctor)

    async def _render(self, *, error: str = "", form: dict | None = None, status: int = 200, doctor: dict | None = None):
        store = self.service.catalog_store
        catalog = store.catalog()
        usage = usage_counts(await self.settings["kubeai_directory"].running_servers())
        edit = self.get_argument("edit", "")
        editing = {}
        if form is not None:
            editing = {form.get("collection", ""): form}
        elif "/" in edit:
            collection, name = edit.split("/", 1)
            if collection in KINDS:
                try:
                    editing = {collection: {"action": "update", **self._as_form(collection, store.get(KINDS[collection][0], name))}}
                except KubeAIError as e:
                    error = e.message
        self.set_status(status)
        self.render(
            "admin.html",
            **self._common(),
            catalog=catalog,
            usage=usage,
            error=page_words(error),
            # A success from an earlier redirect is stale beside a new error.
            done="" if error else self.get_argument("done", ""),
            editing=editing,
            doctor=doctor,
        )

    @staticmethod
    def _as_form(collection: str, entry) -> dict:
        data = to_dict(entry)
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        form["groups"] = ", ".join(data.get("groups", []))
        if collection == "images":
            form["tags"] = ", ".join(data["tags"])
            form.update(default="on" if data["default"] else "", deprecated="on" if data["deprecated"] else "")
        if collection == "profiles":
            form.update(gpus=str(data["gpus"]), max_gpus=str(data["max_gpus"]), default="on" if data["default"] else "")
            form["node_selector"] = "\n".join(f"{k}={v}" for k, v in data["placement"]["node_selector"].items())
            form["tolerations"] = "\n".join(
                f"{t.get('key', '')}{'=' + t['value'] if t['operator'] == 'Equal' else ''}{':' + t['effect'] if t.get('effect') else ''}"
                for t in data["placement"]["tolerations"]
            )
        return form

    async def post(self):
        form = {key: self.get_body_argument(key) for key in self.request.body_arguments}
        collection, action = form.get("collection", ""), form.get("action", "")
        store = self.service.catalog_store
        try:
            if collection not in KINDS:
                raise InvalidInput(f"Unknown kind of entry {collection!r}.")
            kind, parse = KINDS[collection]
            label = page_words(kind).lower()
            name = form.get("name", "").strip()
            if action == "create":
                store.create(kind, parse(form_to_entry(collection, form)))
                done = f"Added {label} {name}."
            elif action == "update":
                store.replace(kind, name, parse(form_to_entry(collection, form)))
                done = f"Saved {label} {name}."
            elif action == "deprecate":
                current = to_dict(store.get(kind, name))
                current.update(deprecated=True, default=False, replacement=form.get("replacement", ""))
                store.replace(kind, name, parse(current))
                done = f"Deprecated image {name}; new servers get {form.get('replacement') or 'the default image'}."
            elif action == "delete":
                store.delete(kind, name)
                done = f"Deleted {label} {name}."
            else:
                raise InvalidInput(f"Unknown action {action!r}.")
        except KubeAIError as e:
            status = e.status if e.status < 500 else 400
            await self._render(error=e.message, form=form if action in ("create", "update") else None, status=status)
            return
        self.redirect(self.service.service_prefix + "admin/?" + urlencode({"done": done}))
