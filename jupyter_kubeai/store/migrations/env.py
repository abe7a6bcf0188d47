"""Alembic environment: the engine comes from the caller (jupyter_kubeai.store.schema)."""

from alembic import context

from jupyter_kubeai.store.tables import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
