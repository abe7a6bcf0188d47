"""Model registry and inference service routes, and the proxy to the services' model servers.

Thin: every decision is in :class:`~jupyter_kubeai.service.models.ModelManager`
(who may see a service, the name its model answers under, which failed
answers become its recent errors).
"""

from __future__ import annotations

import json

from .. import jsonlimits
from ..errors import BadGateway, InvalidInput, Unavailable
from .forwarding import forward, sandbox, served_content_type
from .handlers import BaseHandler
from .models import ModelManager

#: Headers passed on to and from a model server.
_PASSED = ("Content-Type", "Accept")


class ModelHandler(BaseHandler):
    @property
    def models(self) -> ModelManager:
        return self.service.model_manager

    def model_json(self, model, *, detail: bool = False) -> dict:
        return self.models.model_json(self.identity, model, detail=detail)

    async def forward(self, record, method: str, path: str, body: bytes | None, headers: dict, query: str = ""):
        """:func:`.forwarding.forward`, keeping what failed in the service's recent errors (``ModelManager.note_*``)."""
        try:
            response = await forward(self.models.serving, record.name, method, path, body, headers, query)
        except (Unavailable, BadGateway) as e:
            self.models.note_failure(record.name, e.status, e.message)
            raise
        self.models.note_answer(record.name, response.code, response.body)
        return response


class ModelsHandler(ModelHandler):
    """``GET api/models`` (what the caller may see) and ``POST api/models`` (register a version)."""

    async def get(self):
        project = self.get_argument("project", None) or None
        self.write_json({"models": [self.model_json(m) for m in self.models.models(self.identity, project)]})

    async def post(self):
        model, version = await self.models.register(self.identity, self.json_body())
        self.write_json({"model": self.model_json(model),
                         "version": self.models.version_json(self.identity, model, version)}, status=201)


class ModelEntryHandler(ModelHandler):
    async def get(self, model_id):
        self.write_json(self.model_json(self.models.model(self.identity, int(model_id)), detail=True))


class ModelVersionHandler(ModelHandler):
    async def get(self, model_id, version):
        model, record = self.models.version(self.identity, int(model_id), int(version))
        self.write_json(self.models.version_json(self.identity, model, record))

    async def patch(self, model_id, version):
        record = self.models.update_version(self.identity, int(model_id), int(version), self.json_body())
        self.write_json(self.models.version_json(self.identity, self.models.store.model(int(model_id)), record))

    async def delete(self, model_id, version):
        self.models.delete_version(self.identity, int(model_id), int(version))
        self.set_status(204)
        self.finish()


class ModelAliasHandler(ModelHandler):
    async def put(self, model_id, alias):
        version = self.json_body().get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidInput("Send {\"version\": <number>} to point the alias at a version.")
        self.write_json(self.model_json(self.models.set_alias(self.identity, int(model_id), alias, version)))

    async def delete(self, model_id, alias):
        self.write_json(self.model_json(self.models.delete_alias(self.identity, int(model_id), alias)))


class ServicesHandler(ModelHandler):
    """``GET api/services`` and ``POST api/services`` (deploy a model version)."""

    async def get(self):
        prefix = self.service.service_prefix
        self.write_json({"services": [await self.models.status_json(r, prefix, self.identity)
                                      for r in self.models.deployments(self.identity)]})

    async def post(self):
        record = await self.models.deploy(self.identity, self.json_body())
        self.write_json(await self.models.status_json(record, self.service.service_prefix, self.identity), status=201)


class ServiceEntryHandler(ModelHandler):
    """``GET``, ``PATCH`` (version, alias, replicas, size) and ``DELETE api/services/{name}``."""

    async def get(self, name):
        record = self.models.deployment(self.identity, name)
        self.write_json(await self.models.status_json(record, self.service.service_prefix, self.identity, detail=True))

    async def patch(self, name):
        record = await self.models.update(self.identity, name, self.json_body())
        self.write_json(await self.models.status_json(record, self.service.service_prefix, self.identity))

    async def delete(self, name):
        await self.models.delete(self.identity, name)
        self.set_status(204)
        self.finish()


class ServiceRollbackHandler(ModelHandler):
    async def post(self, name):
        record = await self.models.rollback(self.identity, name)
        self.write_json(await self.models.status_json(record, self.service.service_prefix, self.identity))


class ServiceRestartHandler(ModelHandler):
    """``POST api/services/{name}/restart``: the model server started anew, same version (owner or hub admin).

    For a local model server shown Failed once its cause is fixed, or to reload
    a predictor; a backend that cannot restart answers 409 saying what to do instead.
    """

    async def post(self, name):
        record = await self.models.restart(self.identity, name)
        self.write_json(await self.models.status_json(record, self.service.service_prefix, self.identity))


class ServeProxyHandler(ModelHandler):
    """``/serve/{name}/<path>``: a service's model server, for whoever may see the service.

    The answer comes back sandboxed (see :mod:`.forwarding`): JSON as JSON,
    text as ``text/plain``, anything else as a download.
    """

    async def _proxy(self, name, path):
        record = self.models.deployment(self.identity, name)
        body = self.request.body if self.request.method in ("POST", "PUT") else None
        headers = {k: self.request.headers[k] for k in _PASSED if k in self.request.headers}
        response = await self.forward(record, self.request.method, path, body, headers, query=self.request.query)
        content_type, attachment = served_content_type(response.headers.get("Content-Type"))
        self.set_status(response.code)
        sandbox(self)
        self.set_header("Content-Type", content_type)
        if attachment:
            self.set_header("Content-Disposition", "attachment")
        self.finish(response.body)

    async def get(self, name, path):
        await self._proxy(name, path)

    async def post(self, name, path):
        await self._proxy(name, path)


def model_server_answer(response) -> object:
    """A model server's answer as JSON, else ``{"message", "reason"}`` with its text (never trusted to be JSON)."""
    try:
        return jsonlimits.loads(response.body or b"null", what="The model server's answer")
    except InvalidInput:
        return {"message": (response.body or b"").decode(errors="replace")[:1000], "reason": "model_server"}


class ServicePredictHandler(ModelHandler):
    """``POST api/services/{name}/predict``: one request to the model (KServe v1 with ``instances``, else v2).

    For the panel's "try it" box and scripts, through the same API as the rest.
    """

    async def post(self, name):
        record = self.models.deployment(self.identity, name)
        body = self.json_body()
        response = await self.forward(record, "POST", self.models.predict_path(record, body), json.dumps(body).encode(),
                                      {"Content-Type": "application/json"})
        sandbox(self)
        self.write_json(model_server_answer(response), status=response.code)


class ServiceMetadataHandler(ModelHandler):
    """``GET api/services/{name}/metadata``: the model server's Open Inference v2 model metadata.

    Its ``inputs`` are the version's signature, else what the runtime learnt
    from the loaded model (scikit-learn's ``n_features_in_``): the panel's
    "Try it" sample starts from them when the version has no signature. Not
    a prediction, so a failure here is not one of the service's recent errors.
    """

    async def get(self, name):
        record = self.models.deployment(self.identity, name)
        response = await forward(self.models.serving, record.name, "GET", f"v2/models/{self.models.served_name(record)}",
                                 None, {"Accept": "application/json"})
        sandbox(self)
        self.write_json(model_server_answer(response), status=response.code)
