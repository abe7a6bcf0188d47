"""A bounded schemathesis run against the service's own OpenAPI document: no 5xx, no answer that breaks the schema.

Every operation of ``openapi.yaml`` gets a few generated requests (valid
ones and, separately, ones that break the schema), with a fixed seed, as a
hub admin (who may reach every route) and as a user in one project, against
the service in process with items to find: a job, a model with versions and
an alias, a service whose model server answers. Jobs and services run
nowhere (the fakes of the authorization matrix); what runs is tested
elsewhere. Each finding names the request that caused it.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_authz_matrix import document_operations, world  # noqa: F401 (world: the fixture, alice's items and fakes)

#: Requests per operation and generation mode: enough to reach each branch of the bodies' schemas
#: a few times, few enough for ``make test`` on a laptop.
EXAMPLES = 4
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
_ANSWERS = [not_a_server_error, content_type_conformance, response_schema_conformance]
#: A request that breaks the schema may be answered by any 4xx: a path outside the routes' patterns is a
#: 404 from the router, which no operation documents. Valid requests get only documented statuses.
CHECKS = {MODES[0]: [*_ANSWERS, status_code_conformance], MODES[1]: _ANSWERS}
#: Documented paths without parameters: a schema-breaking path parameter may spell one of them
#: (``api/admin/{collection}`` with ``doctor``), and then another operation answers, by its own schema.
FIXED_PATHS = {(method, "/" + path) for method, path in document_operations() if "{" not in path}


def findings(url: str, token: str, mode, sent: list, items: dict | None = None) -> list[str]:
    """Run every operation's examples (blocking: the service answers on the test's event loop).

    ``items``: path parameters naming items that exist (bodies and queries vary, on them); without,
    paths are generated too (and name nothing, mostly).
    """
    import requests

    schema = schemathesis.openapi.from_url(url + "api/openapi.json")
    base_url = url.rstrip("/")
    session = requests.Session()
    found: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        sent.append((operation.label, None))  # every operation the document has
        names = re.findall(r"\{(\w+)\}", operation.path)
        if items is not None and (operation.method.upper() == "DELETE" or not names):
            continue  # deleting the items would leave nothing for the others (the matrix deletes)
        fixed = {name: items[name] for name in names} if items is not None else None

        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
        def run(case):
            response = case.call(base_url=base_url, session=session, headers={"Authorization": f"token {token}"},
                                 timeout=30)
            sent.append((operation.label, response.status_code))
            if names and (case.method.upper(), case.formatted_path) in FIXED_PATHS:
                return  # another operation's route took it (see FIXED_PATHS)
            try:
                case.validate_response(response, checks=CHECKS[mode])
            except (Failure, FailureGroup) as e:  # one finding per check that failed
                why = "; ".join(str(f).strip().splitlines()[0] for f in getattr(e, "exceptions", [e]))
                where = f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:200]}"
                found.append(f"{operation.label} [{mode.value}] {where} -> {response.status_code} "
                             f"{response.text[:300]}\n  {why}")

        try:
            run()
        except Unsatisfiable:
            # No request can break this operation's schema (no parameters, no body): nothing negative to send.
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    return found


@pytest.mark.parametrize("token", ["admin-token", "bob-token"])
async def test_no_server_errors_and_answers_match_the_schema(world, token):  # noqa: F811
    found, sent = [], []
    for mode in MODES:
        found += await asyncio.to_thread(findings, world.url, token, mode, sent)
    # Valid requests on items that exist (bob: alice's project items; the admin: her personal ones).
    # Its job has ended: a followed log (follow=1) streams until then.
    items = await world.values("ended-job", "project" if token == "bob-token" else "personal")
    found += await asyncio.to_thread(findings, world.url, token, MODES[0], sent, items)
    assert not found, f"{len(found)} finding(s):\n" + "\n".join(found)
    # Not a vacuous run: every documented operation was called, and some calls got past the checks to a 2xx.
    operations = {label for label, status in sent if status is None}
    assert {label for label, status in sent if status is not None} == operations and operations == {
        f"{m} /{p}" for m, p in document_operations() if p != "api/openapi.json"}  # schemathesis skips the document
    statuses = Counter(status for _, status in sent if status is not None)
    assert sum(n for status, n in statuses.items() if 200 <= status < 300) >= sum(statuses.values()) // 10, statuses
