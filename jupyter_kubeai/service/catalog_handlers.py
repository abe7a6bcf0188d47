"""Catalog routes: what a user may use, and the admins' REST API.

``GET api/catalog`` is for everyone (their own view); everything under
``api/admin/`` is for hub admins only (403 otherwise). Admin writes take
the same JSON the entries' ``to_dict`` gives, so a script can GET, edit
and PUT back.
"""

from __future__ import annotations

from collections import Counter

from ..catalog.access import CUSTOM_IMAGE, IMAGE, PROFILE, user_view
from ..catalog.model import image_from_dict, image_rule_from_dict, profile_from_dict, to_dict
from .handlers import BaseHandler

#: URL segment -> (store kind, parser)
KINDS = {
    "images": ("image", image_from_dict),
    "profiles": ("profile", profile_from_dict),
    "image-rules": ("image rule", image_rule_from_dict),
}


def usage_counts(servers: list[dict]) -> dict[str, Counter]:
    """How many running servers use each image and profile (from their user_options)."""
    images, profiles = Counter(), Counter()
    for server in servers:
        options = server.get("user_options") or {}
        if options.get(PROFILE):
            profiles[options[PROFILE]] += 1
        if options.get(IMAGE):
            images[options[IMAGE]] += 1
        elif options.get(CUSTOM_IMAGE):
            images["(own image)"] += 1
    return {"images": images, "profiles": profiles}


class UserCatalogHandler(BaseHandler):
    """``GET api/catalog``: the images, sizes and image rules the caller may use."""

    async def get(self):
        view = user_view(self.service.catalog_store.catalog(), self.identity.groups)
        self.write_json(
            {
                "images": [to_dict(i) for i in view.images],
                "deprecated": [to_dict(i) for i in view.deprecated.values()],
                "profiles": [to_dict(p) for p in view.profiles],
                "image_rules": [{"name": r.name, "pattern": r.pattern, "description": r.description} for r in view.rules],
            }
        )


class AdminHandler(BaseHandler):
    """Base of the admin routes: hub admins only."""

    admin_only = True


class AdminCatalogHandler(AdminHandler):
    """``GET api/admin/catalog``: every entry, with how many running servers use it."""

    async def get(self):
        catalog = self.service.catalog_store.catalog()
        usage = usage_counts(await self.settings["kubeai_directory"].running_servers())
        self.write_json(
            {
                "images": [{**to_dict(i), "running_servers": usage["images"][i.name]} for i in catalog.images],
                "profiles": [{**to_dict(p), "running_servers": usage["profiles"][p.name]} for p in catalog.profiles],
                "image_rules": [to_dict(r) for r in catalog.rules],
                "own_images_running": usage["images"]["(own image)"],
                "version": self.service.catalog_store.version(),
            }
        )


class AdminCollectionHandler(AdminHandler):
    """``GET/POST api/admin/{images,profiles,image-rules}``."""

    async def get(self, collection):
        kind, _ = KINDS[collection]
        catalog = self.service.catalog_store.catalog()
        entries = {"image": catalog.images, "profile": catalog.profiles, "image rule": catalog.rules}[kind]
        self.write_json([to_dict(e) for e in entries])

    async def post(self, collection):
        kind, parse = KINDS[collection]
        entry = self.service.catalog_store.create(kind, parse(self.json_body()))
        self.write_json(to_dict(entry), status=201)


class AdminEntryHandler(AdminHandler):
    """``GET/PUT/DELETE api/admin/{images,profiles,image-rules}/<name>``."""

    async def get(self, collection, name):
        kind, _ = KINDS[collection]
        self.write_json(to_dict(self.service.catalog_store.get(kind, name)))

    async def put(self, collection, name):
        kind, parse = KINDS[collection]
        body = self.json_body()
        body.setdefault("name", name)
        entry = self.service.catalog_store.replace(kind, name, parse(body))
        self.write_json(to_dict(entry))

    async def delete(self, collection, name):
        kind, _ = KINDS[collection]
        self.service.catalog_store.delete(kind, name)
        self.set_status(204)
        self.finish()
