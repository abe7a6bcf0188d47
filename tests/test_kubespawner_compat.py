"""KubeAISpawner keeps everything KubeSpawner does.

KubeSpawner's own profile and user-options cases (its tests/test_profile.py
and tests/test_spawner.py, version 7.1), run against ``KubeAISpawner`` with
an admin's ``profile_list``: the form, ``options_from_form``,
``load_user_options``, ``profile_options`` with ``choices`` and
``unlisted_choice`` (``validation_regex``), ``kubespawner_override``, a
callable or dict ``profile_list``. Their users are ``Mock`` objects without
a list of groups and with stored ``user_options`` that are not a dict, as
KubeSpawner's tests make them.

Then what KubeAISpawner adds on top: the same choices checked through the
hub's hook (a 400 with a message before anything is created), the
``profile_list_mode`` settings (the catalog merged with or instead of the
admin's list), and a real start whose progress keeps the kubelet's text.
"""

import copy
import json
import re
from unittest.mock import Mock

import pytest
from jupyterhub.objects import Server
from test_kubeai_spawner import catalog_url, spawner_for  # noqa: F401 (catalog_url is a fixture)
from tornado import web

from jupyter_kubeai.local.spawner import LocalKubeAISpawner
from jupyter_kubeai.spawner import KubeAISpawner, with_kubelet_text

from k8s_schema import validate_core
from kubefake import NAMESPACE, FakeUser, make_spawner


class MockUser(Mock):
    """KubeSpawner's own test user: a Mock, so ``groups`` is a Mock too, not a list."""

    name = "9user@email.com"
    server = Server()

    def __init__(self, **kwargs):
        super().__init__()
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def escaped_name(self):
        return self.name

    @property
    def url(self):
        return self.server.url


class MockOrmSpawner(Mock):
    """KubeSpawner's own test ORM spawner: its ``user_options`` is a Mock, not a dict."""

    name = "server"
    server = None


@pytest.fixture
async def spawner(kube):
    """A KubeAISpawner as KubeSpawner's tests make theirs (``KubeSpawner(_mock=True)``)."""
    return KubeAISpawner(_mock=True, user=MockUser(), orm_spawner=MockOrmSpawner())


# --- KubeSpawner's tests/test_spawner.py profiles ------------------------------------------------

_test_profiles_dict = {
    "training-python": {
        "display_name": "Training Env - Python",
        "slug": "training-python",
        "default": True,
        "kubespawner_override": {
            "image": "training/python:label",
            "cpu_limit": 1,
            "mem_limit": 512 * 1024 * 1024,
            "environment": {"override": "override-value"},
        },
    },
    "training-datascience": {
        "display_name": "Training Env - Datascience",
        "slug": "training-datascience",
        "kubespawner_override": {
            "image": "training/datascience:label",
            "cpu_limit": 4,
            "mem_limit": 8 * 1024 * 1024 * 1024,
        },
    },
    "training-r": {
        "display_name": "Training Env - R",
        "slug": "training-r",
        "kubespawner_override": {
            "image": "training/r:label",
            "cpu_limit": 1,
            "mem_limit": 512 * 1024 * 1024,
            "environment": {"override": "override-value", "to-remove": None},
        },
    },
    "test-choices": {
        "display_name": "Test choices",
        "slug": "test-choices",
        "profile_options": {
            "image": {
                "display_name": "Image",
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Image Location",
                    "validation_regex": "^pangeo/.*$",
                    "validation_message": "Must be a pangeo image, matching ^pangeo/.*$",
                    "kubespawner_override": {"image": "{value}"},
                },
                "choices": {
                    "pytorch": {
                        "display_name": "Python 3 Training Notebook",
                        "kubespawner_override": {"image": "pangeo/pytorch-notebook:master"},
                    },
                    "tf": {
                        "display_name": "R 4.2 Training Notebook",
                        "default": True,
                        "kubespawner_override": {"image": "training/r:label"},
                    },
                },
            },
        },
    },
}
# KubeSpawner's "no-regex" profile: "test-choices" without the free text's validation.
_no_regex = copy.deepcopy(_test_profiles_dict["test-choices"])
_no_regex.update(display_name="Test choices no regex", slug="no-regex")
for _key in ("validation_regex", "validation_message"):
    del _no_regex["profile_options"]["image"]["unlisted_choice"][_key]
_test_profiles_dict["no-regex"] = _no_regex
_test_profiles_list = list(_test_profiles_dict.values())

# Each test gets its own copy: KubeSpawner merges dict overrides into the
# spawner's own dicts, and a shared table would carry one test into the next.
both_shapes = pytest.mark.parametrize("shape", ["list", "dict"])


def profiles_of(shape):
    return copy.deepcopy(_test_profiles_list if shape == "list" else _test_profiles_dict)


def slug_at(idx):
    return _test_profiles_list[idx]["slug"]


def override_at(idx):
    return _test_profiles_list[idx]["kubespawner_override"]


@both_shapes
async def test_user_options_set_from_form(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    await spawner.get_options_form()
    spawner.user_options = spawner.options_from_form({"profile": [slug_at(1)]})
    assert spawner.user_options == {"profile": "training-datascience"}
    assert spawner.cpu_limit is None  # nothing loaded yet
    await spawner.load_user_options()
    for key, value in override_at(1).items():
        assert getattr(spawner, key) == value


@both_shapes
async def test_user_options_set_from_form_choices(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    await spawner.get_options_form()
    spawner.user_options = spawner.options_from_form(
        {"profile": ["test-choices"], "profile-option-test-choices--image": ["pytorch"]}
    )
    assert spawner.user_options == {"image": "pytorch", "profile": "test-choices"}
    assert spawner.cpu_limit is None
    await spawner.load_user_options()
    assert spawner.image == "pangeo/pytorch-notebook:master"


@both_shapes
async def test_user_options_set_from_form_unlisted_choice(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    await spawner.get_options_form()
    for image in ("pangeo/test:latest", "pangeo/test:1.2.3"):  # a second free-text choice too
        spawner.user_options = spawner.options_from_form(
            {"profile": ["test-choices"], "profile-option-test-choices--image--unlisted-choice": [image]}
        )
        assert spawner.user_options == {"image--unlisted-choice": image, "profile": "test-choices"}
        await spawner.load_user_options()
        assert spawner.image == image


@both_shapes
async def test_user_options_set_from_form_invalid_regex(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    await spawner.get_options_form()
    spawner.user_options = spawner.options_from_form(
        {"profile": ["test-choices"], "profile-option-test-choices--image--unlisted-choice": ["invalid/foo:latest"]}
    )
    assert spawner.user_options == {"image--unlisted-choice": "invalid/foo:latest", "profile": "test-choices"}
    assert spawner.cpu_limit is None
    with pytest.raises(ValueError):
        await spawner.load_user_options()


@both_shapes
async def test_user_options_set_from_form_no_regex(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    await spawner.get_options_form()
    spawner.user_options = spawner.options_from_form(
        {"profile": ["no-regex"], "profile-option-no-regex--image--unlisted-choice": ["invalid/foo:latest"]}
    )
    assert spawner.user_options == {"image--unlisted-choice": "invalid/foo:latest", "profile": "no-regex"}
    await spawner.load_user_options()
    assert spawner.image == "invalid/foo:latest"


@both_shapes
async def test_kubespawner_override(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    # "to-remove" goes: the override sets it to None.
    spawner.environment = {"existing": "existing-value", "to-remove": "does-it-matter"}
    await spawner.get_options_form()
    spawner.user_options = spawner.options_from_form({"profile": ["training-r"]})
    assert spawner.user_options == {"profile": "training-r"}
    await spawner.load_user_options()
    assert spawner.environment == {"existing": "existing-value", "override": "override-value"}


@both_shapes
async def test_user_options_api(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    spawner.user_options = {"profile": "training-datascience"}  # as the REST API sets them
    assert spawner.cpu_limit is None
    await spawner.load_user_options()
    for key, value in override_at(1).items():
        assert getattr(spawner, key) == value


@both_shapes
async def test_default_profile(spawner, shape):
    spawner.profile_list = profiles_of(shape)
    spawner.user_options = {}
    await spawner.load_user_options()
    for key, value in override_at(0).items():
        assert getattr(spawner, key) == value


# --- KubeSpawner's tests/test_profile.py ----------------------------------------------------------


async def test_unlisted_choice_non_string_override(spawner):
    spawner.profile_list = [
        {
            "display_name": "CPU only",
            "slug": "cpu",
            "profile_options": {
                "image": {
                    "display_name": "Image",
                    "unlisted_choice": {
                        "enabled": True,
                        "display_name": "Image Location",
                        "validation_regex": "^pangeo/.*$",
                        "validation_message": "Must be a pangeo image, matching ^pangeo/.*$",
                        "kubespawner_override": {
                            "image": "{value}",
                            "environment": {
                                "CUSTOM_IMAGE_USED": "yes",
                                "CUSTOM_IMAGE": "{value}",
                                "USER": "${JUPYTER_USER}",
                                "USER_TEST": "${{JUPYTER_USER}}",
                            },
                            "init_containers": [
                                {"name": "testing", "image": "{value}", "securityContext": {"runAsUser": 1000}}
                            ],
                        },
                    },
                }
            },
        },
    ]
    image = "pangeo/pangeo-notebook:latest"
    spawner.user_options = {"profile": "cpu", "image--unlisted-choice": image}
    await spawner.load_user_options()
    assert spawner.image == image
    assert spawner.environment == {
        "CUSTOM_IMAGE_USED": "yes",
        "CUSTOM_IMAGE": image,
        "USER": "${JUPYTER_USER}",
        "USER_TEST": "${JUPYTER_USER}",
    }
    assert spawner.init_containers == [{"name": "testing", "image": image, "securityContext": {"runAsUser": 1000}}]


async def test_empty_user_options_and_profile_options_api(spawner):
    spawner.profile_list = [
        {
            "display_name": "CPU only",
            "profile_options": {
                "image": {
                    "display_name": "Image",
                    "unlisted_choice": {"enabled": True, "validation_regex": "^pangeo/.*$",
                                        "kubespawner_override": {"image": "{value}"}},
                    "choices": {
                        "op-1": {"display_name": "Option 1",
                                 "kubespawner_override": {"image": "pangeo/pangeo-notebook:ebeb9dd"}},
                        "op-2": {"display_name": "Option 2",
                                 "kubespawner_override": {"image": "pangeo/pangeo-notebook:latest"}},
                    },
                }
            },
        },
    ]
    spawner.user_options = {}
    assert spawner.cpu_limit is None
    await spawner.load_user_options()
    assert spawner.image == "pangeo/pangeo-notebook:ebeb9dd"  # the implicit default: the first choice


async def test_profile_slug_and_option_slug_mixup(spawner):
    spawner.profile_list = [
        {"display_name": "short", "slug": "short",
         "profile_options": {"relevant": {"choices": {"choice-a": {"kubespawner_override": {}}}}}},
        {"display_name": "short-plus", "slug": "short-plus",
         "profile_options": {"irrelevant": {"choices": {"choice-b": {"kubespawner_override": {}}}}}},
    ]
    user_options = spawner.options_from_form(
        {
            "profile": ["short"],
            "profile-option-short--relevant": ["choice-a"],
            "profile-option-short-plus--irrelevant": ["choice-b"],
        }
    )
    assert user_options.get("profile") == "short"
    assert user_options.get("relevant") == "choice-a"
    assert not user_options.get("plus-irrelevant")


async def test_callable_profile_list_is_called_with_the_spawner(spawner):
    seen = []

    async def profiles(current):
        seen.append(current)
        return [{"display_name": "Only one", "kubespawner_override": {"image": "only/one:1", "cpu_limit": 2}}]

    spawner.profile_list = profiles
    form = await spawner.get_options_form()
    assert 'value="only-one"' in form
    spawner.user_options = spawner.options_from_form({"profile": ["only-one"]})
    await spawner.load_user_options()
    assert (spawner.image, spawner.cpu_limit) == ("only/one:1", 2)
    assert seen and all(s is spawner for s in seen)


async def test_the_admin_form_is_kubespawners_with_options_choices_and_free_text(spawner):
    spawner.profile_list = profiles_of("list")
    form = await spawner.get_options_form()
    # The admin's profiles, not the catalog's form; options, choices and the free-text field.
    assert 'id="kubespawner-profiles-list"' in form and "kubeai-spawn-form" not in form
    assert 'name="profile-option-test-choices--image"' in form
    assert '<option value="tf" selected>R 4.2 Training Notebook</option>' in form
    assert 'data-name="profile-option-test-choices--image--unlisted-choice"' in form
    assert 'pattern="^pangeo/.*$"' in form
    assert 'value="training-python"' in form and 'value="no-regex"' in form


@pytest.mark.parametrize("slug, expected", [("profile-2", "profile 2"), (None, "profile 2"), ("", "profile 2")])
async def test_find_slug(spawner, slug, expected):
    profiles = spawner._get_initialized_profile_list(
        [{"display_name": "profile 1", "kubespawner_override": {}},
         {"display_name": "profile 2", "default": True, "kubespawner_override": {}}]
    )
    assert spawner._get_profile(slug, profiles)["display_name"] == expected
    with pytest.raises(ValueError):
        spawner._get_profile("does-not-exist", profiles)


async def test_profile_missing_defaults_populated(spawner):
    profiles = spawner._get_initialized_profile_list(
        [{"display_name": "Something without a slug", "kubespawner_override": {}},
         {"display_name": "Something with choices", "profile_options": {
             "no-defaults": {"choices": {"option-1": {}, "option-2": {}}},
             "only-unlisted": {"unlisted_choice": {"enabled": True}}}}]
    )
    assert profiles[0]["slug"] == "something-without-a-slug" and profiles[0]["default"] is True
    options = profiles[1]["profile_options"]
    assert options["no-defaults"]["choices"]["option-1"]["default"] is True
    assert options["no-defaults"]["unlisted_choice"] == {"enabled": False}
    assert options["only-unlisted"]["unlisted_choice"] == {"enabled": True, "display_name_in_choices": "Other..."}


# --- users and stored options as KubeSpawner's tests make them ----------------------------------


@pytest.mark.parametrize("stored", [Mock(), "profile=gpu", ["gpu"], 7, None])
async def test_a_user_without_groups_and_stored_options_not_a_dict(catalog_url, kube, stored):  # noqa: F811
    orm_spawner = MockOrmSpawner()
    orm_spawner.user_options = stored
    spawner = KubeAISpawner(_mock=True, user=MockUser(name="dora"), orm_spawner=orm_spawner, catalog_url=catalog_url)
    assert isinstance(spawner.user.groups, Mock)
    assert spawner.project_names == []  # no projects
    assert spawner.last_options() == {}  # no last choice
    form = await spawner.get_options_form()
    assert 'id="kubeai-size-small" value="small" checked' in form and 'value="gpu"' not in form
    assert json.loads(spawner.get_env()["KUBEAI_PROJECTS"]) == []


async def test_the_local_spawner_takes_the_same_users(catalog_url, tmp_path):  # noqa: F811
    orm_spawner = MockOrmSpawner()
    orm_spawner.user_options = ["not", "a", "dict"]
    spawner = LocalKubeAISpawner(user=MockUser(name="dora"), orm_spawner=orm_spawner, catalog_url=catalog_url,
                                 share_root=str(tmp_path))
    assert spawner.project_names == [] and spawner.last_options() == {}
    assert json.loads(spawner.kubeai_env()["KUBEAI_MOUNTS"])["projects"] == {}
    form = await spawner.get_options_form()
    assert 'id="kubeai-size-small" value="small" checked' in form


async def test_groups_that_are_not_named_are_skipped(catalog_url, kube):  # noqa: F811
    user = FakeUser("erin", groups=["vision"])
    user.groups.append(Mock(spec=[]))  # no name at all
    spawner = make_spawner(user, spawner_class=KubeAISpawner, catalog_url=catalog_url)
    assert spawner.project_names == ["vision"]


# --- the same choices through the hub's hook: a 400 with a message, nothing created ---------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "test-choices", "image--unlisted-choice": "invalid/foo:latest"},
         "Image 'invalid/foo:latest' is not allowed: Must be a pangeo image, matching ^pangeo/.*$."),
        ({"profile": "test-choices", "image": "nope"}, "Image 'nope' is not a choice; choose one of: pytorch, tf."),
        ({"profile": "training-r", "image--unlisted-choice": "x"}, None),  # no options: nothing to check
        ({"profile": "missing"}, "No such profile: missing"),
        ({"profile": "test-choices", "image--unlisted-choice": ["pangeo/x"]}, "Image takes one of: pytorch, tf"),
    ],
)
async def test_bad_choices_are_refused_before_anything_is_created(kube, options, message):
    spawner = make_spawner(FakeUser("frank"), spawner_class=KubeAISpawner, profile_list=profiles_of("list"))
    if message is None:
        await spawner._run_apply_user_options(options)
        assert spawner.image == "training/r:label"
        return
    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options(options)
    assert error.value.status_code == 400
    assert message in error.value.jupyterhub_message
    assert [c for c in kube.calls if c.verb in ("create", "patch", "update")] == []


async def test_the_hooks_choice_is_applied_once(kube, monkeypatch):
    spawner = make_spawner(FakeUser("gina"), spawner_class=KubeAISpawner, profile_list=profiles_of("list"))
    await spawner._run_apply_user_options({"profile": "test-choices", "image": "pytorch"})
    assert spawner.image == "pangeo/pytorch-notebook:master"
    loads = []
    monkeypatch.setattr(KubeAISpawner, "_load_profile", lambda self, *args: loads.append(args))
    await spawner.load_user_options()  # what start() calls first: nothing left to do
    assert loads == []
    spawner.user_options = {"profile": "training-r"}  # changed since the hook ran: applied now
    await spawner.load_user_options()
    assert [slug for slug, _ in loads] == ["training-r"]


# --- profile_list_mode: the catalog instead of or merged with the admin's list --------------------

ADMIN_ENTRY = {
    "display_name": "Pangeo",
    "slug": "pangeo",
    "kubespawner_override": {"cpu_limit": 3.0},
    "profile_options": {
        "image": {
            "display_name": "Image",
            "choices": {"stable": {"display_name": "Stable", "kubespawner_override": {"image": "pangeo/base:1"}}},
            "unlisted_choice": {"enabled": True, "validation_regex": "^pangeo/.*$",
                                "validation_message": "a pangeo image", "kubespawner_override": {"image": "{value}"}},
        }
    },
}


async def test_catalog_mode_ignores_the_admins_list(catalog_url, kube):  # noqa: F811
    spawner = spawner_for(catalog_url, "hana", [], profile_list=[ADMIN_ENTRY], profile_list_mode="catalog")
    form = await spawner.get_options_form()
    assert "kubeai-spawn-form" in form and "pangeo" not in form
    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options({"profile": "pangeo"})
    assert "Size 'pangeo' is not one you may use" in error.value.jupyterhub_message


async def test_auto_mode_is_the_catalog_without_a_profile_list(catalog_url, kube):  # noqa: F811
    spawner = spawner_for(catalog_url, "hana", [])
    assert spawner.effective_profile_list_mode == "catalog"
    assert "kubeai-spawn-form" in await spawner.get_options_form()
    spawner.profile_list = [ADMIN_ENTRY]
    assert spawner.effective_profile_list_mode == "admin"
    assert 'value="pangeo"' in await spawner.get_options_form()


async def test_merge_mode_offers_both_and_checks_each_its_own_way(catalog_url, kube):  # noqa: F811
    spawner = spawner_for(catalog_url, "hana", ["vision"], profile_list=[ADMIN_ENTRY], profile_list_mode="merge")
    form = await spawner.get_options_form()
    # The user's catalog sizes (with the image and GPU choices), then the admin's entry.
    slugs = re.findall(r'name="profile"\s+id="profile-item-([^"]+)"', form)
    assert slugs == ["small", "gpu", "pangeo"]
    assert 'name="profile-option-gpu--gpus"' in form and 'name="profile-option-pangeo--image"' in form

    # A catalog size: checked against the catalog, through the selection.
    options = spawner.options_from_form(
        {"profile": ["gpu"], "profile-option-gpu--image": ["torch"], "profile-option-gpu--gpus": ["2"]}
    )
    assert options == {"profile": "gpu", "image": "torch", "gpus": "2"}
    await spawner._run_apply_user_options(options)
    assert spawner.selection.gpus == 2 and spawner.image == "quay.io/kubeai/torch:2.13-cuda"
    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options({"profile": "gpu", "gpus": "3"})
    assert "allows 1, 2 GPU(s), not 3" in error.value.jupyterhub_message

    # The admin's entry: its own overrides and free-text check.
    await spawner._run_apply_user_options({"profile": "pangeo", "image--unlisted-choice": "pangeo/custom:2"})
    assert spawner.selection is None
    assert (spawner.image, spawner.cpu_limit) == ("pangeo/custom:2", 3.0)
    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options({"profile": "pangeo", "image--unlisted-choice": "evil/x:1"})
    assert "is not allowed: a pangeo image" in error.value.jupyterhub_message

    # No profile: the catalog's default size.
    await spawner._run_apply_user_options({})
    assert spawner.selection.profile.name == "small"


async def test_merge_mode_admin_entries_win_slug_and_default(catalog_url, kube):  # noqa: F811
    small = {"display_name": "Admin's small", "slug": "small", "default": True, "kubespawner_override": {"image": "admin/small:1"}}
    spawner = spawner_for(catalog_url, "hana", [], profile_list=[small], profile_list_mode="merge")
    profiles, sizes = await spawner.offered_profiles()
    assert [p["slug"] for p in profiles] == ["small"] and sizes == frozenset()
    await spawner._run_apply_user_options({})
    assert spawner.selection is None and spawner.image == "admin/small:1"


async def test_merge_mode_refuses_catalog_sizes_outside_the_users_groups(catalog_url, kube):  # noqa: F811
    spawner = spawner_for(catalog_url, "hana", [], profile_list=[ADMIN_ENTRY], profile_list_mode="merge")
    with pytest.raises(web.HTTPError) as error:
        await spawner._run_apply_user_options({"profile": "gpu"})
    assert "No such profile: gpu" in error.value.jupyterhub_message


# --- real starts: the admin's choice in the pod, one GPU limit, the kubelet's words -------------


async def test_an_admin_profile_starts_with_its_choice_and_the_storage(kube):
    spawner = make_spawner(FakeUser("ivan", groups=["vision"]), spawner_class=KubeAISpawner,
                           profile_list=profiles_of("dict"))
    await spawner._run_apply_user_options({"profile": "test-choices", "image": "pytorch"})
    await spawner.start()
    # Events reach the spawner through its watch, which may trail start().
    await kube.wait_for(lambda: "Started" in {e["reason"] for e in spawner.events}, timeout=10)
    pod = kube.get("pods", NAMESPACE, spawner.pod_name)
    validate_core(pod)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "pangeo/pytorch-notebook:master"
    assert {"name": "kubeai-share", "mountPath": "/mnt/projects/vision", "subPath": "projects/vision"} in container["volumeMounts"]
    messages = [event["message"] async for event in spawner.progress()]
    assert messages[0] == "Starting Test choices with image pangeo/pytorch-notebook:master"
    # KubeSpawner's own progress test: the kubelet's words are there.
    assert re.search(r"Started container|Container started", "\n".join(messages))
    await spawner.stop()


async def test_the_gpu_limit_is_set_once_and_not_carried_into_the_next_spawn(catalog_url, kube):  # noqa: F811
    spawner = spawner_for(catalog_url, "hana", ["vision"], extra_resource_limits={"example.com/fpga": "1"})
    await spawner._run_apply_user_options({"profile": "gpu", "gpus": "2"})
    await spawner.start()
    limits = kube.get("pods", NAMESPACE, spawner.pod_name)["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2" and limits["example.com/fpga"] == "1"
    await spawner.stop()
    assert spawner.extra_resource_limits == {"example.com/fpga": "1"}  # the admin's setting, untouched
    await spawner._run_apply_user_options({"profile": "small"})
    await spawner.start()
    limits = kube.get("pods", NAMESPACE, spawner.pod_name)["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits and limits["example.com/fpga"] == "1"
    await spawner.stop()


@pytest.mark.parametrize(
    "readable, message, expected",
    [
        ("Pulling the image", 'Pulling image "x:1"', 'Pulling the image (Pulling image "x:1")'),
        ("Waiting for a node: 0/3 nodes", "0/3 nodes", "Waiting for a node: 0/3 nodes"),
        ("Container created", "", "Container created"),
        ("Container created", None, "Container created"),
    ],
)
def test_readable_messages_keep_the_kubelets_text(readable, message, expected):
    assert with_kubelet_text(readable, message) == expected


async def test_a_profile_may_move_the_server_to_another_namespace(kube):
    # KubeSpawner's test_spawn_start_profile_list_override_namespace: the
    # namespace comes from the chosen entry, and the watches follow it.
    profiles = [
        {"display_name": "Default namespace", "slug": "default-namespace", "default": True,
         "kubespawner_override": {"cpu_limit": 1}},
        {"display_name": "Different namespace", "slug": "different-namespace",
         "kubespawner_override": {"namespace": "another", "cpu_limit": 1}},
    ]
    spawner = make_spawner(FakeUser("jack"), spawner_class=KubeAISpawner, profile_list=profiles)
    await spawner._run_apply_user_options({"profile": "different-namespace"})
    assert isinstance(await spawner.poll(), int)
    await spawner.start()
    assert kube.get("pods", "another", spawner.pod_name)["status"]["phase"] == "Running"
    assert kube.get("pods", NAMESPACE, spawner.pod_name) is None
    assert await spawner.poll() is None
    await spawner.stop()
    assert kube.get("pods", "another", spawner.pod_name) is None
    assert isinstance(await spawner.poll(), int)
