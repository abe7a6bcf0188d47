"""``POST api/services/{service}/restart``: start a service's model server anew (owner or hub admin).

For a local model server that kept dying and is shown Failed, once its cause
is fixed, or to reload a predictor. Answers the service's JSON, as update and
rollback do; a backend that cannot restart answers 409 saying what to do instead.
"""

from __future__ import annotations

from .model_handlers import ModelHandler


class ServiceRestartHandler(ModelHandler):
    async def post(self, name):
        record = await self.models.restart(self.identity, name)
        self.write_json(await self.models.status_json(record, self.service.service_prefix, self.identity))
