"""Registry storage: copies that never follow a link, even one that appears after the check; signatures."""

import json
import os
import threading

import pytest

from jupyter_kubeai.errors import Forbidden, InvalidInput
from jupyter_kubeai.local.share import LocalShare
from jupyter_kubeai.models import registry


@pytest.fixture
def share(tmp_path):
    share = LocalShare(tmp_path / "share")
    for user in ("alice", "bob"):
        share.ensure_user(user, ["vision"] if user == "alice" else [])
    (share.user_dir("bob") / "secret").mkdir()
    (share.user_dir("bob") / "secret/model.joblib").write_bytes(b"bob's weights")
    (share.user_dir("bob") / "secret/notes.txt").write_bytes(b"bob's notes")
    out = share.user_dir("alice") / "job/outputs"
    out.mkdir(parents=True)
    (out / "model.joblib").write_bytes(b"alice's weights")
    (out / "extra").mkdir()
    (out / "extra/notes.txt").write_bytes(b"alice's notes")
    return share


def resolve(share, path):
    return registry.resolve_source(share, "alice", ("vision",), path)


def stage(share, source, **kw):
    return registry.stage(share, "user-alice", "m", source, **kw)


def registry_files(share):
    return sorted(str(p.relative_to(share.root)) for p in (share.root / "models").rglob("*")) \
        if (share.root / "models").exists() else []


def test_a_folder_is_copied_with_a_checksum_of_the_copy(share):
    staged = stage(share, resolve(share, "job/outputs"))
    assert (staged.format, staged.signature) == ("sklearn", {})
    assert (staged.folder / "model.joblib").read_bytes() == b"alice's weights"
    assert (staged.folder / "extra/notes.txt").read_bytes() == b"alice's notes"
    assert json.loads((staged.folder / "model.json").read_text()) == {"format": "sklearn"}
    assert staged.checksum == registry.checksum(staged.folder)
    # The user's folder changes afterwards: the copy and its checksum do not.
    (share.user_dir("alice") / "job/outputs/model.joblib").write_bytes(b"retrained")
    assert registry.checksum(staged.folder) == staged.checksum


def test_one_file_is_renamed_for_the_runtime(share):
    staged = stage(share, resolve(share, "job/outputs/model.joblib"))
    assert sorted(p.name for p in staged.folder.iterdir()) == ["model.joblib", "model.json"]


def swap_for_link(path, target):
    """What a user can do between the check and the copy: put a link where a file or folder was."""
    if path.is_dir():
        os.rename(path, path.with_name(path.name + ".old"))
    else:
        path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize(
    "registered, swapped, target, message",
    [
        # A file inside the folder becomes a link to bob's file.
        ("job/outputs", "job/outputs/model.joblib", "bob/secret/model.joblib", "model.joblib in 'job/outputs' is a symbolic link"),
        # A folder inside it becomes a link to bob's folder.
        ("job/outputs", "job/outputs/extra", "bob/secret", "extra in 'job/outputs' is a symbolic link"),
        # The registered folder itself, and a folder on the way to it.
        ("job/outputs", "job/outputs", "bob/secret", "^job/outputs is a symbolic link"),
        ("job/outputs", "job", "bob", "job in 'job/outputs' is a symbolic link"),
        # The one registered file.
        ("job/outputs/model.joblib", "job/outputs/model.joblib", "bob/secret/model.joblib",
         "^job/outputs/model.joblib is a symbolic link"),
    ],
)
def test_a_link_swapped_in_after_the_check_is_refused(share, registered, swapped, target, message):
    source = resolve(share, registered)  # checked: all of it is alice's own
    if swapped == "job":  # bob's folder laid out like alice's, so that only the link is wrong
        (share.user_dir("bob") / "outputs").mkdir()
        (share.user_dir("bob") / "outputs/model.joblib").write_bytes(b"bob's weights")
        target = "bob/outputs/.."
    swap_for_link(share.user_dir("alice") / swapped, share.root / "users" / target)
    with pytest.raises(InvalidInput, match=message):
        stage(share, source)
    # Nothing half-made stays in the registry, and nothing of bob's was copied anywhere.
    assert registry_files(share) == []


def test_a_link_that_appears_during_the_copy_is_refused(share, monkeypatch):
    """The swap lands while the folder is being walked (after its first file was copied)."""
    out = share.user_dir("alice") / "job/outputs"
    (out / "z-last.joblib").write_bytes(b"alice's too")
    real_file = registry._Copier._file

    def file_then_swap(self, fd, info, target, shown):
        real_file(self, fd, info, target, shown)
        if shown == "extra/notes.txt":
            swap_for_link(out / "z-last.joblib", share.user_dir("bob") / "secret/model.joblib")

    monkeypatch.setattr(registry._Copier, "_file", file_then_swap)
    with pytest.raises(InvalidInput, match="z-last.joblib in 'job/outputs' is a symbolic link"):
        stage(share, resolve(share, "job/outputs"))
    assert registry_files(share) == []


def test_a_link_at_check_time_is_refused_as_before(share):
    (share.user_dir("alice") / "link-to-bob").symlink_to(share.user_dir("bob"))
    with pytest.raises(Forbidden, match="leads outside your folders"):
        resolve(share, "link-to-bob/secret")
    (share.user_dir("alice") / "job/outputs/sneaky.joblib").symlink_to(share.user_dir("bob") / "secret/model.joblib")
    with pytest.raises(InvalidInput, match="sneaky.joblib in 'job/outputs' is a symbolic link"):
        stage(share, resolve(share, "job/outputs"))
    assert registry_files(share) == []


def test_a_fifo_is_refused_without_waiting_for_a_writer(share):
    os.mkfifo(share.user_dir("alice") / "job/outputs/pipe")
    done = []
    thread = threading.Thread(target=lambda: done.append(pytest.raises(InvalidInput, stage, share,
                                                                       resolve(share, "job/outputs"))))
    thread.start()
    thread.join(10)
    assert done and "pipe is not a regular file" in str(done[0].value)
    assert registry_files(share) == []


def test_an_empty_folder_and_a_folder_without_a_model(share):
    (share.user_dir("alice") / "empty").mkdir()
    with pytest.raises(InvalidInput, match="That folder is empty"):
        stage(share, resolve(share, "empty"))
    with pytest.raises(InvalidInput, match="No model found"):
        stage(share, resolve(share, "job/outputs/extra"))
    assert registry_files(share) == []


def test_the_project_and_global_folders(share):
    (share.global_dir / "shared.joblib").write_bytes(b"everyone's")
    (share.project_dir("vision") / "team.joblib").write_bytes(b"the team's")
    assert (stage(share, resolve(share, "global/shared.joblib")).folder / "model.joblib").read_bytes() == b"everyone's"
    assert (stage(share, resolve(share, "projects/vision/team.joblib")).folder / "model.joblib").read_bytes() == b"the team's"


SIGNATURE = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}],
             "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]}


def test_the_jobs_own_model_json_gives_the_signature_unless_one_is_given(share):
    out = share.user_dir("alice") / "job/outputs"
    (out / "model.json").write_text(json.dumps({"format": "sklearn", "signature": SIGNATURE,
                                                "config": {"predict_proba": True}}))
    staged = stage(share, resolve(share, "job/outputs"))
    assert staged.signature == SIGNATURE
    assert json.loads((staged.folder / "model.json").read_text()) == {
        "format": "sklearn", "signature": SIGNATURE, "config": {"predict_proba": True}}
    given = {"inputs": [{"name": "x", "shape": [-1, 3]}]}
    assert stage(share, resolve(share, "job/outputs"), signature=given).signature == given
    staged_before = len(list((share.root / "models").rglob(".incoming-*")))
    (out / "model.json").write_text(json.dumps({"signature": {"inputs": [{"shape": "20"}]}}))
    with pytest.raises(InvalidInput, match=r"The folder's model.json: signature.inputs\[0\].shape must be"):
        stage(share, resolve(share, "job/outputs"))
    (out / "model.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="The folder's model.json is not valid JSON"):
        stage(share, resolve(share, "job/outputs"))
    assert len(list((share.root / "models").rglob(".incoming-*"))) == staged_before == 2


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, {}),
        ({}, {}),
        (SIGNATURE, SIGNATURE),
        ({"inputs": [{"shape": [-1, 4]}, {}]}, {"inputs": [{"name": "input-0", "shape": [-1, 4]}, {"name": "input-1"}]}),
        ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 224, 224]}], "outputs": None},
         {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]}),
    ],
)
def test_good_signatures_in_their_canonical_form(raw, expected):
    assert registry.check_signature(raw) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1, 20], "signature must be an object"),
        ("[-1, 20]", "signature must be an object"),
        ({"outputs": []}, "signature needs its inputs"),
        ({"inputs": [], "outputs": []}, r"signature.inputs must be a list of 1 to 64 tensors"),
        ({"inputs": {"name": "x"}}, r"signature.inputs must be a list"),
        ({"inputs": [["x"]]}, r"signature.inputs\[0\] must be an object"),
        ({"inputs": [{"name": "x", "dtype": "FP64"}]}, r"signature.inputs\[0\] has unknown field\(s\) dtype"),
        ({"inputs": [{"name": ""}]}, r"signature.inputs\[0\].name must be a name"),
        ({"inputs": [{"name": "x"}, {"name": "x"}]}, r"signature.inputs\[1\].name must be a name .* that no other input has"),
        ({"inputs": [{"datatype": "float64"}]}, r"signature.inputs\[0\].datatype is 'float64'; use one of BOOL"),
        ({"inputs": [{"shape": [-1, 0]}]}, r"signature.inputs\[0\].shape must be a list of 1 to 16 sizes"),
        ({"inputs": [{"shape": [-2]}]}, r"shape must be a list"),
        ({"inputs": [{"shape": [True]}]}, r"shape must be a list"),
        ({"inputs": [{"shape": []}]}, r"shape must be a list"),
        ({"inputs": [{"shape": [1.5]}]}, r"shape must be a list"),
        ({"inputs": [{}], "outputs": [{"shape": "x"}]}, r"signature.outputs\[0\].shape must be a list"),
        ({"inputs": [{}], "extra": 1}, r"signature has unknown field\(s\) extra"),
    ],
)
def test_malformed_signatures_say_what_is_wrong(raw, message):
    with pytest.raises(InvalidInput, match=message):
        registry.check_signature(raw)


# --- a forced format must match the files; a version folder already on the share is skipped ------------


def torchscript_file(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/code/__torch__.py", "def forward(self, x): return x\n")
    return path


@pytest.mark.parametrize("path, forced, message", [
    ("job/outputs/model.joblib", "torchscript", "model.joblib is sklearn"),
    ("job/outputs", "torchscript", "the files are sklearn"),
    ("job/outputs", "custom", "the files are sklearn"),
    ("job/outputs/extra", "sklearn", "hold no model of a known format"),
    ("job/fake.pt", "torchscript", "hold no model of a known format"),
    ("job/ts.pt", "sklearn", "ts.pt is torchscript"),
])
def test_a_forced_format_that_does_not_match_the_files_is_refused(share, path, forced, message):
    (share.user_dir("alice") / "job/fake.pt").write_bytes(b"not a zip")
    torchscript_file(share.user_dir("alice") / "job/ts.pt")
    with pytest.raises(InvalidInput, match=f"Format '{forced}' does not match the model") as refused:
        stage(share, resolve(share, path), model_format=forced)
    assert message in str(refused.value)
    assert registry_files(share) == []


def test_a_forced_format_that_matches_is_kept(share):
    torchscript_file(share.user_dir("alice") / "job/ts.pt")
    assert stage(share, resolve(share, "job/outputs"), model_format="sklearn").format == "sklearn"
    staged = stage(share, resolve(share, "job/ts.pt"), model_format="torchscript")
    assert staged.format == "torchscript" and (staged.folder / "model.pt").is_file()
    # A file whose name says nothing: taken as the format said (the runtime loads it by the canonical name).
    (share.user_dir("alice") / "job/weights.bin").write_bytes(b"joblib bytes")
    assert stage(share, resolve(share, "job/weights.bin"), model_format="sklearn").format == "sklearn"


def test_a_version_folder_already_on_the_share_is_skipped_never_replaced(share):
    """Another (or a restored) store registered versions of this model on the same share."""
    theirs = share.root / registry.version_path("user-alice", "m", 1)
    theirs.mkdir(parents=True)
    (theirs / "model.joblib").write_bytes(b"their weights")
    (theirs.parent / "1.1").mkdir()
    relative = registry.free_version_path(share, "user-alice", "m", 1)
    assert relative == "models/user-alice/m/1.2"
    assert registry.free_version_path(share, "user-alice", "m", 2) == "models/user-alice/m/2"
    staged = stage(share, resolve(share, "job/outputs"))
    registry.place(share, staged.folder, relative)
    assert (share.root / relative / "model.joblib").read_bytes() == b"alice's weights"
    assert (theirs / "model.joblib").read_bytes() == b"their weights"


def test_a_folder_that_appears_while_placing_is_a_conflict(share):
    from jupyter_kubeai.errors import Conflict

    staged = stage(share, resolve(share, "job/outputs"))
    taken = share.root / registry.version_path("user-alice", "m", 1)
    taken.mkdir()
    (taken / "x").write_text("someone else's")
    with pytest.raises(Conflict, match="already holds models/user-alice/m/1"):
        registry.place(share, staged.folder, registry.version_path("user-alice", "m", 1))
    assert (taken / "x").read_text() == "someone else's"
