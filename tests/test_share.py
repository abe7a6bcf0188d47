"""The local share: layout, idempotency, group changes, and no escape."""

import os
from pathlib import Path

import pytest

from jupyter_kubeai.local.share import LocalShare
from jupyter_kubeai.naming import project_subpath, slug, user_subpath


def tree(root: Path) -> dict[str, str]:
    """Every entry under root: 'dir', 'file' or 'link -> target'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link -> " + os.readlink(path)
            else:
                out[rel] = "dir" if path.is_dir() else "file"
    return out


def test_layout_for_a_user_in_one_project(tmp_path):
    share = LocalShare(tmp_path)
    folders = share.ensure_user("alice", ["vision"])

    assert tree(tmp_path) == {
        "users": "dir",
        "users/alice": "dir",
        "users/alice/global": "link -> ../../global",
        "users/alice/projects": "dir",
        "users/alice/projects/vision": "link -> ../../../projects/vision",
        "projects": "dir",
        "projects/vision": "dir",
        "global": "dir",
    }
    assert folders.home == tmp_path / "users" / "alice"
    assert folders.projects == {"vision": tmp_path / "projects" / "vision"}
    # The links lead where they should.
    (tmp_path / "projects" / "vision" / "data.csv").write_text("x")
    assert (folders.home / "projects" / "vision" / "data.csv").read_text() == "x"
    assert (folders.home / "global").resolve() == (tmp_path / "global").resolve()


def test_ensure_user_is_idempotent_and_keeps_files(tmp_path):
    share = LocalShare(tmp_path)
    share.ensure_user("alice", ["vision", "nlp"])
    (tmp_path / "users/alice/notes.txt").write_text("mine")
    before = tree(tmp_path)
    share.ensure_user("alice", ["nlp", "vision"])
    share.ensure_user("alice", ["vision", "nlp"])
    assert tree(tmp_path) == before
    assert (tmp_path / "users/alice/notes.txt").read_text() == "mine"


def test_leaving_a_project_removes_only_its_link(tmp_path):
    share = LocalShare(tmp_path)
    share.ensure_user("alice", ["vision", "nlp"])
    (tmp_path / "projects/nlp/corpus.txt").write_text("data")
    # A link of the user's own, to elsewhere, must survive.
    (tmp_path / "users/alice/projects/mine").symlink_to("/tmp")

    share.ensure_user("alice", ["vision"])

    links = sorted(p.name for p in (tmp_path / "users/alice/projects").iterdir())
    assert links == ["mine", "vision"]
    # The project's data is untouched: only the user's link is gone.
    assert (tmp_path / "projects/nlp/corpus.txt").read_text() == "data"


def test_user_folder_in_the_way_of_a_link_is_left_alone(tmp_path):
    share = LocalShare(tmp_path)
    (tmp_path / "users/alice/global").mkdir(parents=True)
    (tmp_path / "users/alice/global/keep.txt").write_text("keep")
    share.ensure_user("alice", [])
    assert (tmp_path / "users/alice/global/keep.txt").read_text() == "keep"
    assert not (tmp_path / "users/alice/global").is_symlink()


ODD_NAMES = [
    "..",
    ".",
    "../../etc",
    "a/../../b",
    "/etc/passwd",
    "alice/..",
    "Alice",
    "ALICE",
    "al ice",
    "al\x00ice",
    "élise",
    "李",
    "a--b",
    "x---deadbeef",
    "-a-",
    "a" * 300,
    "user@example.com",
    "a.b",
    "a-b",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_names_stay_inside_the_share(tmp_path, name):
    root = tmp_path / "share"
    share = LocalShare(root)
    folders = share.ensure_user(name, [name, "vision"])
    for path in [folders.home, folders.global_dir, *folders.projects.values()]:
        assert path.resolve().is_relative_to(root.resolve()), path
    # Every entry, followed through links, is inside the share.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for entry in dirnames + filenames:
            assert (Path(dirpath) / entry).resolve().is_relative_to(root.resolve())
    # Nothing was created beside the share.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["share"]


def test_slugs_are_safe_and_collision_free():
    slugs = [slug(n) for n in ODD_NAMES + ["alice", "vision"]]
    assert len(set(slugs)) == len(slugs), "two names share a folder"
    for s in slugs:
        assert s not in ("", ".", "..")
        assert "/" not in s and "\x00" not in s
        assert s == s.lower()
    assert slug("alice") == "alice"  # plain names stay readable
    assert user_subpath("alice") == "users/alice"
    assert project_subpath("../x").startswith("projects/x---")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_slug_refuses_non_names(bad):
    with pytest.raises(ValueError):
        slug(bad)
