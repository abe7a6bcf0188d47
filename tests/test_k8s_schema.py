"""The schema checks themselves: they accept valid objects and refuse unknown fields."""

import pytest

from k8s_schema import validate_core, validate_custom

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
JOB = {
    "apiVersion": "kubeflow.org/v1",
    "kind": "PyTorchJob",
    "metadata": {"name": "j"},
    "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {"containers": [{"name": "pytorch", "image": "x:1"}]}}}}},
}


def test_valid_objects_pass():
    validate_core(POD)
    validate_custom(JOB)


@pytest.mark.parametrize(
    "obj, check",
    [
        ({**POD, "spec": {"containers": [{"name": "c", "image": "x:1", "imagePullPolcy": "Always"}]}}, validate_core),
        ({**POD, "spec": {**POD["spec"], "nodeSelectr": {}}}, validate_core),
        ({**JOB, "spec": {**JOB["spec"], "runPolicy": {"cleanPodPolicy": "None", "ttlSeconds": 5}}}, validate_custom),
        ({**JOB, "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": "one"}}}}, validate_custom),
    ],
    ids=["typo-in-container", "typo-in-pod-spec", "unknown-run-policy-field", "wrong-type"],
)
def test_unknown_fields_and_wrong_types_fail(obj, check):
    with pytest.raises(AssertionError, match="is invalid"):
        check(obj)


def test_unknown_kinds_are_reported():
    with pytest.raises(AssertionError, match="no CRD for"):
        validate_custom({"apiVersion": "example.org/v1", "kind": "Nope"})
