"""The spawn form: what it shows for a user, and reading it back."""

from jupyter_kubeai.catalog.access import Catalog, select, user_view
from jupyter_kubeai.catalog.form import OWN_IMAGE, options_from_form, render_form
from jupyter_kubeai.catalog.model import image_from_dict, image_rule_from_dict, profile_from_dict

CATALOG = Catalog(
    images=(
        image_from_dict({"name": "base", "image": "python:3.11", "default": True, "display_name": "Base <Python>"}),
        image_from_dict({"name": "torch", "image": "quay.io/k/torch:2"}),
        image_from_dict({"name": "secret", "image": "quay.io/k/secret:1", "groups": ["ops"]}),
    ),
    profiles=(
        profile_from_dict({"name": "small", "default": True}),
        profile_from_dict({"name": "gpu", "gpus": 1, "max_gpus": 4, "groups": ["vision"]}),
    ),
    rules=(image_rule_from_dict({"name": "own", "pattern": r"registry\.example\.org/vision/.+", "groups": ["vision"]}),),
)


def test_form_shows_only_what_the_user_may_use_escaped():
    html = render_form(user_view(CATALOG, []))
    assert 'value="base" selected' in html and 'value="torch"' in html
    assert "secret" not in html and 'value="gpu"' not in html
    assert f'value="{OWN_IMAGE}"' not in html  # no image rule for this user
    assert "Base &lt;Python&gt;" in html and "Base <Python>" not in html
    assert 'id="kubeai-size-small" value="small" checked' in html


def test_form_for_a_vision_member_preselects_the_last_choice():
    view = user_view(CATALOG, ["vision"])
    html = render_form(view, {"profile": "gpu", "image": "torch", "gpus": "3"})
    assert 'value="torch" selected' in html
    assert 'id="kubeai-size-gpu" value="gpu" checked' in html
    assert 'name="gpus-gpu"' in html and '<option value="3" selected>3 GPUs</option>' in html
    assert f'value="{OWN_IMAGE}"' in html and r'pattern="(?:registry\.example\.org/vision/.+)"' in html


def test_a_stale_last_choice_falls_back_to_defaults_with_a_notice():
    html = render_form(user_view(CATALOG, []), {"profile": "gpu"}, notice="Your last choice is no longer available")
    assert 'id="kubeai-size-small" value="small" checked' in html
    assert 'id="kubeai-notice"' in html


def test_options_from_form_round_trip_through_select():
    view = user_view(CATALOG, ["vision"])
    posted = {"profile": ["gpu"], "image": ["torch"], "gpus-gpu": ["2"], "gpus-small": ["9"], "_xsrf": ["x"]}
    options = options_from_form(posted)
    assert options == {"profile": "gpu", "image": "torch", "gpus": "2"}
    assert select(view, options).gpus == 2
    own = options_from_form({"profile": ["small"], "image": [OWN_IMAGE], "image--unlisted-choice": ["registry.example.org/vision/x:1"]})
    assert own == {"profile": "small", "image--unlisted-choice": "registry.example.org/vision/x:1"}
    assert select(view, own).image_ref == "registry.example.org/vision/x:1"
    assert options_from_form({}) == {}
