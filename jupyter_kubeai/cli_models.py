"""``kubeai models ...`` and ``kubeai services ...``: the registry and inference services from a shell.

A model is named by its id, or ``name`` / ``project/name`` as ``kubeai
models list`` shows it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.parse
from urllib.parse import urljoin

from .errors import InvalidInput


def find_model(client, ref: str) -> dict:
    if ref.isdigit():
        return client.call("GET", f"api/models/{ref}")
    project, _, name = ref.rpartition("/")
    matches = [m for m in client.call("GET", "api/models")["models"]
               if m["name"] == name and (not project or m["project"] == project)]
    if not matches:
        raise InvalidInput(f"You have no model {ref!r}; see `kubeai models list`.")
    if len(matches) > 1:
        raise InvalidInput(f"{ref!r} is in several projects ({', '.join(str(m['project']) for m in matches)}): "
                           "name it as project/name, or by id.")
    return client.call("GET", f"api/models/{matches[0]['id']}")


def _label(model: dict) -> str:
    return f"{model['project']}/{model['name']}" if model.get("project") else model["name"]


def _pairs(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{pair!r} is not KEY=VALUE.")
        out[key] = value
    return out


def models_list(client, args, out) -> int:
    query = "?" + urllib.parse.urlencode({"project": args.project}) if args.project else ""
    models = client.call("GET", "api/models" + query)["models"]
    if args.json:
        print(json.dumps(models, indent=2), file=out)
        return 0
    print(f"{'ID':>4}  {'MODEL':30} {'LATEST':>6}  ALIASES", file=out)
    for m in models:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(m["aliases"].items()))
        print(f"{m['id']:>4}  {_label(m):30} {m['latest'] or '-':>6}  {aliases}", file=out)
    return 0


def models_show(client, args, out) -> int:
    model = find_model(client, args.model)
    if args.json:
        print(json.dumps(model, indent=2), file=out)
        return 0
    print(f"{_label(model)} (id {model['id']}), aliases: "
          f"{', '.join(f'{a}={v}' for a, v in sorted(model['aliases'].items())) or 'none'}", file=out)
    names = sorted({k for v in model["versions"] for k in v["metrics"]})
    print(f"{'VERSION':>7}  {'FORMAT':12} {'JOB':24} " + " ".join(f"{n:>10}" for n in names), file=out)
    for v in model["versions"]:
        metrics = " ".join(f"{v['metrics'].get(n, ''):>10}" if not isinstance(v["metrics"].get(n), float)
                           else f"{v['metrics'][n]:>10.4g}" for n in names)
        archived = " (archived)" if v["archived"] else ""
        print(f"{v['version']:>7}  {v['format']:12} {v['lineage'].get('job_id', '-'):24} {metrics}{archived}", file=out)
    return 0


def _metrics(pairs: list[str]) -> dict:
    out = {}
    for key, value in _pairs(pairs).items():
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"metric {key}={value!r} is not a number (NAME=NUMBER).")
        out[key] = int(value) if value.strip().lstrip("+-").isdigit() else number
    return out


def _signature(text: str | None) -> dict | None:
    """``--signature``: JSON, or ``@file`` holding it (checked in full by the hub)."""
    if text is None:
        return None
    where = "--signature"
    if text.startswith("@"):
        where = text[1:]
        try:
            with open(where, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise argparse.ArgumentTypeError(f"cannot read the signature from {where}: {e.strerror}.") from None
    try:
        signature = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"the signature in {where} is not JSON: {e}") from None
    if not isinstance(signature, dict):
        raise argparse.ArgumentTypeError('the signature is a JSON object: {"inputs": [{"name": "input-0", '
                                         '"datatype": "FP64", "shape": [-1, 20]}]}.')
    return signature


def models_register(client, args, out) -> int:
    body = {"name": args.name, "project": args.project, "tags": _pairs(args.tag)}
    for key in ("path", "job_id", "format", "description"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.metric:
        body["metrics"] = _metrics(args.metric)
    signature = _signature(args.signature)
    if signature is not None:
        body["signature"] = signature
    answer = client.call("POST", "api/models", body)
    print(f"{_label(answer['model'])} version {answer['version']['version']} ({answer['version']['checksum']})", file=out)
    return 0


def models_alias(client, args, out) -> int:
    model = find_model(client, args.model)
    if args.delete:
        client.call("DELETE", f"api/models/{model['id']}/aliases/{args.alias}")
    else:
        if args.version is None:
            raise argparse.ArgumentTypeError("give the version the alias points at (or --delete).")
        client.call("PUT", f"api/models/{model['id']}/aliases/{args.alias}", {"version": args.version})
    return 0


def models_archive(client, args, out) -> int:
    model = find_model(client, args.model)
    client.call("PATCH", f"api/models/{model['id']}/versions/{args.version}", {"archived": not args.undo})
    return 0


def models_delete_version(client, args, out) -> int:
    model = find_model(client, args.model)
    client.call("DELETE", f"api/models/{model['id']}/versions/{args.version}")
    return 0


def _service_line(s: dict) -> str:
    return f"{s['name']:24} {s['model'] + ':' + str(s['version']):24} {s['state']:9} {s['endpoint']}"


def services_list(client, args, out) -> int:
    services = client.call("GET", "api/services")["services"]
    if args.json:
        print(json.dumps(services, indent=2), file=out)
        return 0
    print(f"{'SERVICE':24} {'MODEL:VERSION':24} {'STATE':9} ENDPOINT", file=out)
    for s in services:
        print(_service_line(s), file=out)
    return 0


def _service_options(args) -> dict:
    body = {}
    for key in ("version", "alias", "replicas", "max_replicas", "profile", "gpus", "image", "max_batch_size",
                "max_latency_ms"):
        if getattr(args, key, None) is not None:
            body[key] = getattr(args, key)
    return body


def services_deploy(client, args, out) -> int:
    model = find_model(client, args.model)
    service = client.call("POST", "api/services", {"name": args.name, "model_id": model["id"], **_service_options(args)})
    print(_service_line(service), file=out)
    return 0


def services_update(client, args, out) -> int:
    print(_service_line(client.call("PATCH", f"api/services/{args.name}", _service_options(args))), file=out)
    return 0


def services_status(client, args, out) -> int:
    s = client.call("GET", f"api/services/{args.name}")
    if args.json:
        print(json.dumps(s, indent=2), file=out)
        return 0
    wanted = ((s.get("spec") or {}).get("options") or {}).get("replicas", 1)
    replicas = f"{s.get('ready_replicas', 0)}/{wanted} ready"
    serving = s.get("serving_version")
    print(f"{s['name']}: {s['model']} version {s['version']} ({s['state']}, {replicas}"
          f"{f', serving version {serving}' if serving not in (None, s['version']) else ''})", file=out)
    if s.get("reason"):
        print(f"  why: {s['reason']}", file=out)
    # The routes are paths of the hub's: as URLs at the address this command talks to.
    print(f"  endpoint: {urljoin(client.url, s['endpoint'])}", file=out)
    print(f"  predict:  {urljoin(client.url, s['predict_url'])}", file=out)
    errors = s.get("recent_errors") or []
    print(f"  recent errors: {len(errors) or 'none'}", file=out)
    for e in errors[:10]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
        print(f"    {when}  {e['status']}  {e['message']}", file=out)
    return 0


def services_rollback(client, args, out) -> int:
    print(_service_line(client.call("POST", f"api/services/{args.name}/rollback", {})), file=out)
    return 0


def services_restart(client, args, out) -> int:
    print(_service_line(client.call("POST", f"api/services/{args.name}/restart", {})), file=out)
    return 0


def services_delete(client, args, out) -> int:
    client.call("DELETE", f"api/services/{args.name}")
    print(f"{args.name} deleted", file=out)
    return 0


def services_predict(client, args, out) -> int:
    text = sys.stdin.read() if args.body == "-" else args.body
    try:
        body = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"the request is not JSON: {e}") from None
    started = time.perf_counter()
    answer = client.call("POST", f"api/services/{args.name}/predict", body)
    print(json.dumps(answer), file=out)
    print(f"({(time.perf_counter() - started) * 1000:.1f} ms)", file=sys.stderr)
    return 0


def add_commands(command, group) -> None:
    """Add ``models`` and ``services`` (each with its own subcommands) to the ``kubeai`` parser."""
    models = group("models", "The model registry: list (the default), show, register, alias, archive.")
    # `kubeai models` alone lists them, as `kubeai jobs` does.
    models.set_defaults(func=models_list, project=None, json=False)
    sub = models.add_subparsers(dest="action", metavar="ACTION")
    p = command(sub, "list", models_list, "Models you may see (yours and your projects').")
    p.add_argument("--project")
    p.add_argument("--json", action="store_true")
    p = command(sub, "show", models_show, "A model's versions, metrics side by side.")
    p.add_argument("model", help="id, name or project/name")
    p.add_argument("--json", action="store_true")
    p = command(sub, "register", models_register, "Register a new version from your volumes or one of your jobs.")
    p.add_argument("name")
    p.add_argument("--path", help="A file or folder relative to your home (with --job: inside the job folder).")
    p.add_argument("--job", dest="job_id", help="One of your jobs: its folder, lineage and metrics.")
    p.add_argument("--project", help="One of your projects (default: your own model).")
    p.add_argument("--format", choices=["sklearn", "torchscript", "custom"], help="Default: guessed.")
    p.add_argument("--description")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-m", "--metric", action="append", default=[], metavar="NAME=NUMBER",
                   help="A metric of this version (with --job: over the job's own last values).")
    p.add_argument("--signature", metavar="JSON|@FILE",
                   help='Inputs and outputs, e.g. \'{"inputs": [{"name": "input-0", "datatype": "FP64", '
                        '"shape": [-1, 20]}]}\' (-1: any size). Default: the model.json the job wrote, if any. '
                        'The Services panel\'s "Try it" sample follows it.')
    p = command(sub, "alias", models_alias, "Point an alias (e.g. production) at a version, or remove it.")
    p.add_argument("model")
    p.add_argument("alias")
    p.add_argument("version", type=int, nargs="?")
    p.add_argument("--delete", action="store_true")
    p = command(sub, "archive", models_archive, "Archive a version (no new services on it).")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.add_argument("--undo", action="store_true", help="Unarchive it.")
    p = command(sub, "delete-version", models_delete_version, "Delete a version and its files (not while served).")
    p.add_argument("model")
    p.add_argument("version", type=int)

    services = group("services", "Inference services: list (the default), status, deploy, update, rollback, restart, delete, predict.")
    services.set_defaults(func=services_list, json=False)
    sub = services.add_subparsers(dest="action", metavar="ACTION")
    p = command(sub, "list", services_list, "Services you may see, with state and endpoint.")
    p.add_argument("--json", action="store_true")
    p = command(sub, "status", services_status, "One service: state, endpoint, versions and its recent failed requests.")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    for name, func, help in (("deploy", services_deploy, "Deploy a model version as an HTTP service."),
                             ("update", services_update, "Switch a service to another version (no failed requests).")):
        p = command(sub, name, func, help)
        p.add_argument("name")
        if name == "deploy":
            p.add_argument("model", help="id, name or project/name")
        p.add_argument("--version", type=int)
        p.add_argument("--alias")
        p.add_argument("--replicas", type=int, help="Replicas (the least, with --max-replicas).")
        p.add_argument("--max-replicas", type=int, dest="max_replicas",
                       help="Autoscale from --replicas up to this many on CPU use (Kubernetes).")
        p.add_argument("--profile", "--size", dest="profile", help="A size of the catalog.")
        p.add_argument("--gpus", type=int, help="GPUs, within the size's range.")
        p.add_argument("--image", help="A catalog image to run the model server in (default: the project's runtime).")
        p.add_argument("--max-batch-size", type=int, dest="max_batch_size", help="Adaptive batching: at most this many.")
        p.add_argument("--max-latency-ms", type=float, dest="max_latency_ms",
                       help="Adaptive batching: wait at most this long for a batch to fill.")
    command(sub, "rollback", services_rollback, "Go back to the previous version.").add_argument("name")
    command(sub, "restart", services_restart,
            "Start a Failed service's model server anew, same version (local mode; a rollout restart on a cluster).",
            ).add_argument("name")
    command(sub, "delete", services_delete, "Stop and remove a service.").add_argument("name")
    p = command(sub, "predict", services_predict, "Send one request (JSON, or - for stdin); prints the answer.")
    p.add_argument("name")
    p.add_argument("body", help='e.g. \'{"instances": [[1, 2, 3]]}\' (KServe v1) or a v2 "inputs" body')
