"""The spawn form, the same in both modes: KubeSpawner's own profile form.

:func:`render_form` renders KubeSpawner's ``form.html`` with a user's
``profile_list``; :func:`options_from_form` reads the posted fields back
into ``user_options`` (``profile``, ``image``, ``image--unlisted-choice``,
``gpus``), as KubeSpawner does.
"""

from __future__ import annotations

from html import escape

from jinja2 import Environment, PackageLoader

_env = Environment(loader=PackageLoader("kubespawner", "templates"), autoescape=True)
# Keep the admins' order of profiles when the template serialises them.
_env.policies["json.dumps_kwargs"] = {"sort_keys": False}


def render_form(profile_list: list[dict], notice: str = "") -> str:
    """HTML of the spawn form; the preselected size is the list's default."""
    entries = []
    for profile in profile_list:
        options = {}
        for key, option in profile.get("profile_options", {}).items():
            options[key] = {**option, "unlisted_choice": option.get("unlisted_choice", {"enabled": False})}
        entries.append({**profile, "profile_options": options})
    default = next((p["slug"] for p in entries if p.get("default")), None)
    form = _env.get_template("form.html").render(
        profile_list=entries, user_options={"profile": default} if default else {}
    )
    if notice:
        form = f'<div class="alert alert-warning" id="kubeai-notice">{escape(notice)}</div>\n' + form
    return form


def options_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
    """``{"profile": [...], "profile-option-<slug>--<key>": [...]}`` -> user_options."""
    slug = (formdata.get("profile") or [""])[0]
    if not slug:
        return {}
    options = {"profile": slug}
    prefix = f"profile-option-{slug}--"
    for key, values in formdata.items():
        if key.startswith(prefix) and values:
            options[key[len(prefix):]] = values[0]
    if options.get("image") == "unlisted-choice":
        del options["image"]
    return options
