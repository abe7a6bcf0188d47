"""Thin request handlers of the hub service.

Every handler derives from :class:`BaseHandler`, which authenticates the
caller in ``prepare()`` and refuses anyone without a hub identity (401; a
hub token not allowed to use the service: 403), unless the handler says
``public = True``, then refuses route parameters no handler could use (a
NUL, an id beyond 64 bits: 400). Errors become JSON ``{"message",
"reason"}`` with their status from :mod:`.errors`. No answer of the
service may be framed by another page, nor sniffed into another type.
"""

from __future__ import annotations

import json
import logging
import re

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web

from .. import __version__, jsonlimits
from ..catalog.access import CUSTOM_IMAGE, IMAGE, PROFILE, Catalog
from ..errors import Forbidden, InvalidInput, KubeAIError, NotAuthenticated, NotFound, Unavailable, http_status
from .identity import Identity

log = logging.getLogger(__name__)

#: Route parameters that are SQL integers (``{model_id}``, ``{version}``): beyond 64 bits is a 400, not an overflow.
INTEGER_PARAMETERS = frozenset({"model_id", "version"})
_PARAMETER = re.compile(r"\{(\w+)\}")


class _SettingsHubAuth:
    """Use the application's HubOAuth instead of a process-wide singleton."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, value):  # pragma: no cover - HubAuthenticated may assign
        pass


class BaseHandler(_SettingsHubAuth, HubOAuthenticated, web.RequestHandler):
    """Authenticated JSON handler."""

    #: Set to True on handlers anyone may call (health, the API document).
    public = False
    #: Set to True on browser pages: without an identity they send the
    #: browser to the hub's OAuth login instead of answering 403.
    page = False
    #: Set to True on handlers for hub admins only (403 for anyone else).
    admin_only = False
    #: What anyone else is told.
    forbidden_message = "Only hub admins may manage the catalog."

    identity: Identity | None = None

    @property
    def service(self):
        """The running ``KubeAIService`` application (settings, backends)."""
        return self.settings["kubeai"]

    async def prepare(self):
        self.identity = await self._authenticate()
        if self.identity is None and self.page:
            self.redirect(self.get_login_url())
            return
        if self.identity is None and not self.public:
            raise NotAuthenticated(
                "This API needs a JupyterHub identity: send a hub API token "
                "(Authorization: token ...) allowed to access the kubeai service, "
                "or log in to the hub first."
            )
        if self.admin_only and not self.identity.admin:
            raise Forbidden(self.forbidden_message)
        self.check_path_parameters()

    def check_path_parameters(self) -> None:
        """400 for route parameters (decoded) that hold a NUL or an integer beyond 64 bits."""
        template = self.settings.get("kubeai_routes", {}).get(type(self), "")
        for name, value in zip(_PARAMETER.findall(template), self.path_args):
            if "\x00" in value:
                raise InvalidInput(f"The {name} in the path holds a NUL character (%00); remove it.")
            if name in INTEGER_PARAMETERS and (len(value) > 19 or int(value) > jsonlimits.INT64_MAX):
                raise InvalidInput(f"The {name} in the path, {value[:30]}, is larger than any there can be.")

    def set_default_headers(self):
        # No page of the service may be framed (clickjacking) nor sniffed into another type.
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")

    async def _authenticate(self) -> Identity | None:
        try:
            # A forged or expired credential gives None; an error means the
            # hub itself could not be asked.
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as e:
            raise Unavailable(
                "The kubeai service cannot check credentials with the hub right now "
                f"({e.log_message}); try again in a moment."
            ) from e
        if not model:
            return None
        try:
            model = self.check_hub_user(model)
        except UserNotAllowed:
            # A real hub identity whose token lacks the scope to use this service.
            raise Forbidden(
                f"Your hub credentials ({model.get('name', '?')}) are not allowed to use the kubeai service: "
                "use a token with the access:services!service=kubeai scope, or log in to the hub in the browser."
            ) from None
        if model is None:
            return None
        return await self.settings["kubeai_directory"].identify(model)

    def get_current_user(self):
        return self.identity

    def get_template_namespace(self):
        # The pages link the hub's own stylesheet and logo (hub_prefix is the hub's path, e.g. /hub/).
        namespace = super().get_template_namespace()
        namespace.update(hub_prefix=self.hub_auth.hub_prefix, hub_static=self.hub_auth.hub_prefix + "static/")
        return namespace

    def on_finish(self):
        # API latency by route template (one series per route, whatever the ids in the path).
        metrics = self.settings.get("kubeai_metrics")
        if metrics is not None:
            route = self.settings.get("kubeai_routes", {}).get(type(self), "unmatched")
            metrics.observe_request(route, self.request.method, self.get_status(), self.request.request_time())

    def json_body(self) -> dict:
        """The request's JSON object (an empty body is ``{}``), or 400 (see :func:`jupyter_kubeai.jsonlimits.loads`).

        No string in it may hold a NUL: they become names, labels and file paths.
        """
        body = jsonlimits.loads(self.request.body or b"{}", allow_nul=False)
        if not isinstance(body, dict):
            raise InvalidInput("The request body must be a JSON object.")
        return body

    def write_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data))

    def log_exception(self, typ, value, tb):
        if isinstance(value, KubeAIError):
            log.info("%s %s -> %s: %s", self.request.method, self.request.path, value.status, value)
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, KubeAIError):
            status_code = http_status(error)
            body = {"message": error.message, "reason": error.reason}
            if status_code == 401:
                self.set_header("WWW-Authenticate", 'token realm="kubeai"')
        elif isinstance(error, web.HTTPError):
            body = {"message": error.log_message or self._reason, "reason": "http"}
        elif status_code >= 500:
            body = {
                "message": "Internal error in the kubeai service; the hub admin can find the details in its log.",
                "reason": "internal",
            }
        else:
            body = {"message": self._reason, "reason": "http"}
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))


class HomeHandler(BaseHandler):
    """The service's page: who you are; linked from the hub's Services menu."""

    page = True

    async def get(self):
        self.render(
            "home.html",
            identity=self.identity,
            mode=self.service.mode,
            version=__version__,
            prefix=self.service.service_prefix,
            hub_home=self.hub_auth.hub_prefix + "home",
        )


class MeHandler(BaseHandler):
    async def get(self):
        me = self.identity.to_json()
        me["mode"] = self.service.mode
        me["service_version"] = __version__
        me["servers"] = running_servers(self.identity, self.service.catalog_store.catalog())
        self.write_json(me)


def running_servers(identity: Identity, catalog: Catalog) -> list[dict]:
    """The caller's running servers: size, image, and a word if the image is deprecated."""
    images = {i.name: i for i in catalog.images}
    servers = []
    for name, options in identity.servers:
        image_name = options.get(IMAGE, "")
        image = images.get(image_name)
        notice = ""
        if image is not None and image.deprecated:
            instead = images.get(image.replacement)
            notice = f"Image {image.label!r} is deprecated" + (
                f"; restart your server to get {instead.label!r}." if instead else "; pick another image at your next start."
            )
        servers.append(
            {
                "name": name,
                "profile": options.get(PROFILE, ""),
                "image": image_name or options.get(CUSTOM_IMAGE, ""),
                "notice": notice,
            }
        )
    return servers


class HealthHandler(BaseHandler):
    public = True

    async def prepare(self):
        # Liveness must not depend on the hub answering token checks.
        self.identity = None

    async def get(self):
        self.write_json({"status": "ok", "version": __version__, "mode": self.service.mode})


class OpenAPIHandler(BaseHandler):
    public = True

    async def get(self):
        self.write_json(self.service.openapi_document)


class NotFoundHandler(BaseHandler):
    """Any path the service does not have: a JSON 404 (after authentication)."""

    async def prepare(self):
        await super().prepare()
        raise NotFound(f"The kubeai service has no route {self.request.path!r}; see api/openapi.json.")


class OAuthCallbackHandler(_SettingsHubAuth, HubOAuthCallbackHandler):
    """Finishes the hub OAuth login for the service's browser pages."""
