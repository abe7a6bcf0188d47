"""Catalog entries, per-group access, the spawn form's profile_list and selection checks."""

import re

import pytest

from jupyter_kubeai.catalog.access import Catalog, profile_list, select, user_view
from jupyter_kubeai.catalog.model import (
    image_from_dict,
    image_rule_from_dict,
    profile_from_dict,
    quantity_value,
    to_dict,
)
from jupyter_kubeai.errors import InvalidInput

CATALOG = Catalog(
    images=(
        image_from_dict({"name": "base", "image": "quay.io/kubeai/base:1.0", "default": True, "description": "Python"}),
        image_from_dict({"name": "torch", "image": "quay.io/kubeai/torch:2.13-cuda", "tags": ["gpu"]}),
        image_from_dict({"name": "old", "image": "quay.io/kubeai/old:0.9", "deprecated": True, "replacement": "torch"}),
        image_from_dict({"name": "vision-only", "image": "registry.example.org/vision/lab:3", "groups": ["vision"]}),
    ),
    profiles=(
        profile_from_dict({"name": "small", "cpu_request": "500m", "cpu_limit": "1", "memory_request": "1Gi", "memory_limit": "2Gi", "default": True}),
        profile_from_dict({"name": "gpu", "cpu_limit": "8", "memory_limit": "32Gi", "gpus": 1, "max_gpus": 4, "groups": ["vision"],
                           "placement": {"node_selector": {"pool": "gpu"}}}),
    ),
    rules=(image_rule_from_dict({"name": "vision-custom", "pattern": r"registry\.example\.org/vision/.+", "groups": ["vision"]}),),
)


def test_entries_round_trip_through_json():
    for entry in (*CATALOG.images, *CATALOG.profiles, *CATALOG.rules):
        kind = {"Image": image_from_dict, "Profile": profile_from_dict, "ImageRule": image_rule_from_dict}
        assert kind[type(entry).__name__](to_dict(entry)) == entry


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "Base", "image": "x:1"}, "name 'Base' is not valid"),
        ({"name": "../x", "image": "x:1"}, "is not valid"),
        ({"name": "a", "image": "not an image"}, "image reference"),
        ({"name": "a", "image": "x:1", "colour": "red"}, "unknown field(s) colour"),
        ({"name": "a", "image": "x:1", "replacement": "b"}, "only a deprecated image"),
        ({"name": "a", "image": "x:1", "deprecated": True, "replacement": "a"}, "cannot replace itself"),
        ({"name": "a", "image": "x:1", "deprecated": True, "default": True}, "cannot be the default"),
        ({"name": "a", "image": "x:1", "groups": "vision"}, "groups must be a list"),
        ({"name": "a", "image": "x:1", "default": "yes"}, "default must be true or false"),
    ],
)
def test_bad_images_are_refused_with_the_reason(data, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        image_from_dict(data)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "p", "cpu_limit": "lots"}, "cpu_limit 'lots' is not a Kubernetes quantity"),
        ({"name": "p", "cpu_request": "2", "cpu_limit": "1"}, "cpu_request 2 is more than cpu_limit 1"),
        ({"name": "p", "memory_request": "4Gi", "memory_limit": "2G"}, "memory_request 4Gi is more than memory_limit 2G"),
        ({"name": "p", "cpu_limit": "0"}, "must be more than 0"),
        ({"name": "p", "gpus": -1}, "gpus must be a whole number"),
        ({"name": "p", "gpus": 2, "max_gpus": 1}, "max_gpus 1 is less than gpus 2"),
        ({"name": "p", "max_gpus": 2}, "CPU-only profile"),
        ({"name": "p", "gpus": 1, "gpu_resource": "gpu"}, "not an extended resource name"),
        ({"name": "p", "placement": {"node_selector": {"bad key!": "x"}}}, "is not a valid label"),
        ({"name": "p", "placement": {"tolerations": [{"operator": "Maybe"}]}}, "Equal or Exists"),
        ({"name": "p", "placement": {"affinity": {}}}, "node_selector and/or tolerations"),
    ],
)
def test_bad_profiles_are_refused_with_the_reason(data, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        profile_from_dict(data)


def test_other_gpu_vendors_and_quantities():
    profile = profile_from_dict({"name": "amd", "gpus": 2, "gpu_resource": "amd.com/gpu", "cpu_request": "1.5", "cpu_limit": "2"})
    assert profile.gpu_choices == (1, 2)
    assert quantity_value("500m") == quantity_value("0.5")
    assert quantity_value("1Gi") == 1024**3


def test_image_rules_need_groups_and_a_valid_pattern():
    with pytest.raises(InvalidInput, match="list the groups"):
        image_rule_from_dict({"name": "r", "pattern": ".*"})
    with pytest.raises(InvalidInput, match="not a valid regular expression"):
        image_rule_from_dict({"name": "r", "pattern": "(", "groups": ["g"]})


@pytest.mark.parametrize(
    "groups, images, profiles, may_type",
    [
        ([], ["base", "torch"], ["small"], False),
        (["vision"], ["base", "torch", "vision-only"], ["small", "gpu"], True),
        (["nlp", "vision"], ["base", "torch", "vision-only"], ["small", "gpu"], True),
        (["nlp"], ["base", "torch"], ["small"], False),
    ],
)
def test_users_see_what_their_groups_allow(groups, images, profiles, may_type):
    view = user_view(CATALOG, groups)
    assert [i.name for i in view.images] == images
    assert [p.name for p in view.profiles] == profiles
    assert bool(view.rules) is may_type
    assert list(view.deprecated) == ["old"]


def test_profile_list_for_a_vision_member_in_full():
    entries = profile_list(user_view(CATALOG, ["vision"]))
    small, gpu = entries
    assert small == {
        "slug": "small",
        "display_name": "small",
        "description": "1 CPU, 2Gi memory",
        "default": True,
        "kubespawner_override": {
            "cpu_guarantee": 0.5,
            "cpu_limit": 1.0,
            "mem_guarantee": 1024**3,
            "mem_limit": 2 * 1024**3,
            "extra_resource_limits": {},
        },
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    "base": {"display_name": "base — Python", "default": True, "kubespawner_override": {"image": "quay.io/kubeai/base:1.0"}},
                    "torch": {"display_name": "torch", "default": False, "kubespawner_override": {"image": "quay.io/kubeai/torch:2.13-cuda"}},
                    "vision-only": {"display_name": "vision-only", "default": False, "kubespawner_override": {"image": "registry.example.org/vision/lab:3"}},
                },
                # The shape KubeSpawner's form.html expects (and its own initialisation gives).
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Your own image",
                    "display_name_in_choices": "Other (type an image)…",
                    "validation_regex": r"(?:registry\.example\.org/vision/.+)",
                    "validation_message": r"registry\.example\.org/vision/.+",
                    "kubespawner_override": {"image": "{value}"},
                },
            }
        },
    }
    assert gpu["description"] == "8 CPU, 32Gi memory, up to 4 GPU (nvidia.com/gpu)"
    assert gpu["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert list(gpu["profile_options"]["gpus"]["choices"]) == ["1", "2", "3", "4"]
    assert gpu["profile_options"]["gpus"]["choices"]["2"]["kubespawner_override"] == {"extra_resource_limits": {"nvidia.com/gpu": "2"}}


def test_last_choice_is_preselected_and_deprecated_ones_are_redirected():
    view = user_view(CATALOG, ["vision"])
    entries = profile_list(view, {"profile": "gpu", "image": "torch", "gpus": "3"})
    small, gpu = entries
    assert (small["default"], gpu["default"]) == (False, True)
    assert gpu["profile_options"]["image"]["choices"]["torch"]["default"] is True
    assert gpu["profile_options"]["gpus"]["choices"]["3"]["default"] is True
    # The last image was deprecated since: its replacement is preselected.
    small, _ = profile_list(view, {"profile": "small", "image": "old"})
    assert small["profile_options"]["image"]["choices"]["torch"]["default"] is True
    # A last choice the user may no longer use falls back to the defaults.
    [small] = profile_list(user_view(CATALOG, []), {"profile": "gpu"})
    assert small["default"] is True


def test_select_defaults_and_redirects():
    view = user_view(CATALOG, ["vision"])
    chosen = select(view, {})
    assert (chosen.profile.name, chosen.image_name, chosen.image_ref, chosen.gpus) == ("small", "base", "quay.io/kubeai/base:1.0", 0)
    chosen = select(view, {"profile": "gpu", "image": "old", "gpus": "2"})
    assert (chosen.image_name, chosen.gpus) == ("torch", 2)
    assert chosen.notice == "Image 'old' is deprecated; 'torch' is used instead."
    custom = select(view, {"profile": "small", "image--unlisted-choice": "registry.example.org/vision/mine:1"})
    assert (custom.image_ref, custom.image_name) == ("registry.example.org/vision/mine:1", "")
    assert select(view, custom.as_options()) == custom


@pytest.mark.parametrize(
    "groups, options, message",
    [
        ([], {"profile": "gpu"}, "Size 'gpu' is not one you may use. Available: small."),
        ([], {"image": "vision-only"}, "Image 'vision-only' is not one you may use. Available: base, torch."),
        ([], {"image--unlisted-choice": "registry.example.org/vision/x:1"}, "You may not type an image of your own"),
        (["vision"], {"image--unlisted-choice": "docker.io/evil/miner"}, "Image 'docker.io/evil/miner' is not allowed"),
        (["vision"], {"image--unlisted-choice": "registry.example.org/vision/x:1; rm -rf"}, "is not an image reference"),
        (["vision"], {"profile": "gpu", "gpus": "5"}, "Size 'gpu' allows 1, 2, 3, 4 GPU(s), not 5."),
        (["vision"], {"profile": "gpu", "gpus": "0"}, "not 0"),
        (["vision"], {"profile": "small", "gpus": "1"}, "Size 'small' allows 0 GPU(s), not 1."),
        (["vision"], {"profile": "gpu", "gpus": "two"}, "GPU count 'two' is not a number."),
    ],
)
def test_tampered_choices_are_refused_clearly(groups, options, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        select(user_view(CATALOG, groups), options)


def test_an_empty_catalog_says_what_to_do():
    with pytest.raises(InvalidInput, match="ask a hub admin"):
        select(user_view(Catalog(), ["vision"]), {})
