"""The spawn form, the same in both modes.

One image chooser (plus a typed image where an image rule allows it) and
one list of sizes (with a GPU count where the size offers a range): the
catalog's images and sizes are independent, so the form does not repeat
every image under every size as KubeSpawner's generic profile form does
(with 100 images and 80 sizes that is thousands of options per page).

:func:`options_from_form` turns the posted fields into ``user_options``
in KubeSpawner's shape (``profile``, ``image``, ``image--unlisted-choice``,
``gpus``), which :func:`~.access.select` checks.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader

from .access import CUSTOM_IMAGE, GPUS, IMAGE, PROFILE, UserView, select

_env = Environment(loader=PackageLoader("jupyter_kubeai.catalog", "templates"), autoescape=True)
#: The image select's value for "I type my own image".
OWN_IMAGE = "--own-image--"


def render_form(view: UserView, last: dict | None = None, notice: str = "") -> str:
    """HTML of the spawn form for ``view``, ``last`` preselected when still allowed."""
    try:
        chosen = select(view, last) if last else None
    except Exception:  # a stale choice: the defaults instead
        chosen = None
    default_image = view.default_image
    chosen_image = chosen.image_name if chosen else (default_image.name if default_image else "")
    chosen_size = chosen.profile.name if chosen else (view.default_profile.name if view.default_profile else "")
    own_image = None
    if view.rules:
        own_image = {
            "pattern": view.custom_image_pattern,
            "message": "; ".join(r.description or r.pattern for r in view.rules),
        }
    sizes = [
        {
            "name": p.name,
            "label": p.label,
            "summary": p.summary(),
            "description": p.description,
            "gpus": p.gpus,
            "gpu_choices": p.gpu_choices,
        }
        for p in view.profiles
    ]
    html = _env.get_template("spawn_form.html").render(
        images=view.images,
        sizes=sizes,
        chosen_image=chosen_image,
        chosen_custom=chosen.image_ref if chosen and not chosen.image_name else "",
        chosen_size=chosen_size,
        chosen_gpus={chosen.profile.name: chosen.gpus} if chosen else {},
        own_image=own_image,
        own_choice=OWN_IMAGE,
    )
    if notice:
        from html import escape

        html = f'<div class="alert alert-warning" id="kubeai-notice">{escape(notice)}</div>\n' + html
    return html


def options_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
    """The posted form -> user_options (KubeSpawner's keys)."""

    def first(key: str) -> str:
        return (formdata.get(key) or [""])[0].strip()

    options = {}
    if first(PROFILE):
        options[PROFILE] = first(PROFILE)
    image = first(IMAGE)
    if image == OWN_IMAGE:
        options[CUSTOM_IMAGE] = first(CUSTOM_IMAGE)
    elif image:
        options[IMAGE] = image
    gpus = first(f"{GPUS}-{options.get(PROFILE, '')}")
    if gpus:
        options[GPUS] = gpus
    return options
