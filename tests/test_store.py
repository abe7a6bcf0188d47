"""The SQL store: migrations and catalog rules, on SQLite and on a real PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from jupyter_kubeai.catalog.model import image_from_dict, profile_from_dict
from jupyter_kubeai.errors import Conflict, InvalidInput, NotFound
from jupyter_kubeai.store.catalog import CatalogStore
from jupyter_kubeai.store.schema import current_revision, head_revision, open_engine, upgrade
from jupyter_kubeai.store.tables import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kubeai.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_db")
    engine = open_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine):
    upgrade(engine)
    return CatalogStore(engine)


def test_migrations_build_exactly_the_tables(engine):
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], "tables.py and the migrations disagree: add a migration"


def test_upgrading_again_keeps_every_row(store, engine):
    store.create("image", image_from_dict({"name": "base", "image": "python:3.11"}))
    store.create("profile", profile_from_dict({"name": "small"}))
    before = store.catalog()
    upgrade(engine)  # a restart on an up-to-date store
    assert CatalogStore(engine).catalog() == before
    assert set(inspect(engine).get_table_names()) >= {"catalog_images", "catalog_profiles", "alembic_version"}


def test_create_read_replace_delete(store):
    base = store.create("image", image_from_dict({"name": "base", "image": "python:3.11", "tags": ["cpu"], "groups": ["vision"]}))
    assert store.get("image", "base") == base
    newer = image_from_dict({"name": "base", "image": "python:3.12", "description": "newer"})
    store.replace("image", "base", newer)
    assert store.catalog().images == (newer,)
    store.delete("image", "base")
    assert store.catalog().images == ()
    with pytest.raises(NotFound):
        store.get("image", "base")


def test_versions_count_writes(store):
    v0 = store.version()
    store.create("profile", profile_from_dict({"name": "small"}))
    store.replace("profile", "small", profile_from_dict({"name": "small", "cpu_limit": "2"}))
    store.delete("profile", "small")
    assert store.version() == v0 + 3


def test_conflicts_and_missing_entries(store):
    store.create("image", image_from_dict({"name": "base", "image": "python:3.11"}))
    with pytest.raises(Conflict, match="exists already"):
        store.create("image", image_from_dict({"name": "base", "image": "python:3.12"}))
    with pytest.raises(NotFound):
        store.replace("image", "nope", image_from_dict({"name": "nope", "image": "python:3.12"}))
    with pytest.raises(InvalidInput, match="names cannot change"):
        store.replace("image", "base", image_from_dict({"name": "other", "image": "python:3.12"}))
    with pytest.raises(NotFound):
        store.delete("profile", "nope")


def test_one_default_per_kind(store):
    store.create("profile", profile_from_dict({"name": "a", "default": True}))
    store.create("profile", profile_from_dict({"name": "b", "default": True}))
    assert [(p.name, p.default) for p in store.catalog().profiles] == [("a", False), ("b", True)]


def test_deprecation_rules(store):
    store.create("image", image_from_dict({"name": "new", "image": "python:3.12"}))
    with pytest.raises(InvalidInput, match="'ghost' is not in the catalog"):
        store.create("image", image_from_dict({"name": "old", "image": "python:3.10", "deprecated": True, "replacement": "ghost"}))
    store.create("image", image_from_dict({"name": "old", "image": "python:3.10", "deprecated": True, "replacement": "new"}))
    with pytest.raises(Conflict, match="replaces deprecated image"):
        store.delete("image", "new")
    with pytest.raises(Conflict, match="cannot be deprecated while it does"):
        store.replace("image", "new", image_from_dict({"name": "new", "image": "python:3.12", "deprecated": True}))
    store.create("image", image_from_dict({"name": "older", "image": "python:3.9", "deprecated": True}))
    with pytest.raises(InvalidInput, match="is deprecated itself"):
        store.replace("image", "old", image_from_dict({"name": "old", "image": "python:3.10", "deprecated": True, "replacement": "older"}))


def test_seed_happens_once_in_the_store_life(store):
    assert store.seed(
        images=[{"name": "old", "image": "python:3.10", "deprecated": True, "replacement": "base"}, {"name": "base", "image": "python:3.11"}],
        profiles=[{"name": "small"}],
        rules=[{"name": "own", "pattern": "python:.*", "groups": ["vision"]}],
    )
    assert [i.name for i in store.catalog().images] == ["base", "old"]
    store.delete("profile", "small")
    assert not store.seed(profiles=[{"name": "small"}])
    assert store.catalog().profiles == ()


def test_bad_seed_names_the_entry(store):
    with pytest.raises(InvalidInput, match="profile 'big': cpu_limit 'huge'"):
        store.seed(profiles=[{"name": "big", "cpu_limit": "huge"}])


def test_positions_keep_admin_order(store, engine):
    for name in ["zeta", "alpha", "mid"]:
        store.create("image", image_from_dict({"name": name, "image": "python:3.11"}))
    assert [i.name for i in store.catalog().images] == ["zeta", "alpha", "mid"]
    with engine.connect() as connection:
        assert connection.execute(text("select count(*) from catalog_images")).scalar() == 3


def test_an_upgrade_from_the_first_revision_keeps_the_catalog(engine):
    upgrade(engine, "0001_catalog")
    with engine.begin() as connection:
        connection.execute(text(
            "insert into catalog_images (name, description, groups, position, created, updated, image, display_name, "
            "tags, is_default, deprecated, replacement) values ('base', 'kept', '[]', 1, '2026-01-01', '2026-01-01', "
            "'python:3.11', 'Base', '[]', true, false, '')"
        ))
    upgrade(engine)  # to head: adds the jobs table
    assert current_revision(engine) == head_revision()
    [image] = CatalogStore(engine).catalog().images
    assert (image.name, image.description, image.default) == ("base", "kept", True)
    assert "jobs" in inspect(engine).get_table_names()
