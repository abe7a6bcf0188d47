"""``kubeai doctor``: what the cluster offers jupyter_kubeai and what is missing, as a table.

Two ways to run it:

- through the hub service (``GET api/admin/doctor``, a hub admin's token):
  the checks run with the service's own credentials and settings;
- straight against a cluster, no hub needed (an admin installing it):
  ``kubeai doctor --kubeconfig ~/.kube/config [--context C] [--namespace NS]
  [--config kubeai_config.py] [--project P ...]`` or ``--in-cluster``; the
  settings are the service's config file's, else the defaults.

Exit status: 1 if any check failed, else 0 (warnings do not fail).
"""

from __future__ import annotations

import json
import shutil
import textwrap

SYMBOLS = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


def add_command(command) -> None:
    """Add ``doctor`` to the ``kubeai`` parser (``command(name, func, help)`` makes a subcommand)."""
    p = command("doctor", cmd_doctor, "Check the cluster: operators, queues, KServe, storage, GPUs, permissions; "
                                      "exit 1 if a check fails.")
    p.add_argument("--json", action="store_true", help="The report as JSON.")
    direct = p.add_argument_group("straight against a cluster, without the hub (needs kubernetes_asyncio)")
    direct.add_argument("--kubeconfig", metavar="PATH", help="Check the cluster of this kubeconfig, with its credentials.")
    direct.add_argument("--context", help="With --kubeconfig: this context instead of the current one.")
    direct.add_argument("--in-cluster", dest="in_cluster", action="store_true",
                        help="Check the cluster this pod runs in, with its service account.")
    direct.add_argument("--config", metavar="FILE",
                        help="The kubeai service's config file (c.KubernetesBackend..., c.KubernetesServing...): "
                             "the settings to check against (default: the defaults).")
    direct.add_argument("--catalog", metavar="FILE",
                        help="A catalog YAML/JSON file (as $KUBEAI_INITIAL_CATALOG, e.g. the kubeai-catalog ConfigMap's "
                             "catalog.yaml): check that some node offers the GPU resources its sizes ask for "
                             "(default: the config's KubeAIService.initial_catalog; without either, not checked).")
    direct.add_argument("--namespace", help="The namespace of jobs and services (default: the config's, else 'default').")
    direct.add_argument("--project", action="append", default=[], metavar="NAME",
                        help="A project (hub group) whose queue to check. Repeatable.")


def runs_without_service(args) -> bool:
    """``kubeai doctor --kubeconfig/--in-cluster`` needs no service URL or hub token."""
    return bool(getattr(args, "kubeconfig", None) or getattr(args, "in_cluster", False))


def cmd_doctor(client, args, out) -> int:
    report = run_direct(args) if runs_without_service(args) else client.call("GET", "api/admin/doctor")
    if args.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write(format_report(report))
    return 1 if any(c["status"] == "fail" for c in report["checks"]) else 0


def format_report(report: dict, width: int | None = None) -> str:
    """A table: area, check, status, what was found; each fix on the lines under its row."""
    rows = [("AREA", "CHECK", "STATUS", "FOUND")]
    rows += [(c["area"], c["name"], SYMBOLS.get(c["status"], c["status"]), c["found"]) for c in report["checks"]]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = sum(widths) + 6
    width = width or shutil.get_terminal_size((120, 24)).columns
    lines = []
    for row, check in zip(rows, [None, *report["checks"]]):
        lead = "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
        lines.append(f"{lead}  {row[3]}".rstrip())
        if check and check.get("fix"):
            lines += textwrap.wrap(f"fix: {check['fix']}", width=indent + max(50, width - indent),
                                   initial_indent=" " * indent, subsequent_indent=" " * (indent + 5),
                                   break_on_hyphens=False, break_long_words=False)
    counts = {status: sum(c["status"] == status for c in report["checks"]) for status in SYMBOLS}
    where = f" ({report['mode']} mode{', namespace ' + report['namespace'] if report.get('namespace') else ''})"
    lines.append("")
    lines.append(f"{counts['fail']} failed, {counts['warn']} warning(s), {counts['ok']} ok{where}")
    return "\n".join(lines) + "\n"


def run_direct(args) -> dict:
    """The checks from this machine, with the kubeconfig's (or the pod's) credentials."""
    import asyncio

    from .errors import InvalidInput

    if args.kubeconfig and args.in_cluster:
        raise InvalidInput("Pass --kubeconfig or --in-cluster, not both.")
    return asyncio.run(_check(args))


async def _check(args) -> dict:
    # Imported here: talking to the service needs the standard library only.
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    from .backends.kubernetes import KubernetesBackend
    from .backends.kubernetes_serving import KubernetesServing
    from .catalog.model import profile_from_dict
    from .errors import InvalidInput
    from .kube.doctor import check_cluster, connect, gpu_resources_of, settings_for, summary

    config = Config()
    if args.config:
        import os

        try:
            config = PyFileConfigLoader(os.path.basename(args.config), os.path.dirname(args.config) or ".").load_config()
        except Exception as e:
            raise InvalidInput(f"Cannot load the config file {args.config}: {e}") from None
    backend = KubernetesBackend(config=config, **({"namespace": args.namespace} if args.namespace else {}))
    serving = KubernetesServing(config=config)
    quota = (config.get("KubeAIService") or {}).get("project_gpu_quota") or {}
    projects = set(args.project) | {p for p in quota if p != "*"} | set(backend.project_pools)
    catalog = (config.get("KubeAIService") or {}).get("initial_catalog") or {}
    if args.catalog:
        import yaml

        try:
            with open(args.catalog) as f:
                catalog = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InvalidInput(f"Cannot read the catalog file {args.catalog}: {e}") from None
    try:
        profiles = [profile_from_dict(p) for p in (catalog.get("profiles") or [])]
    except (InvalidInput, AttributeError, TypeError) as e:
        raise InvalidInput(f"The catalog's sizes are not valid: {e}") from None
    settings = settings_for(backend, serving, projects=projects, gpu_resources=gpu_resources_of(profiles))
    client = await connect(kubeconfig=args.kubeconfig, context=args.context, in_cluster=args.in_cluster)
    try:
        checks = await check_cluster(client, settings)
    finally:
        await client.close()
    return {"mode": "kubernetes", "namespace": settings.namespace, "status": summary(checks),
            "checks": [c.to_json() for c in checks]}
