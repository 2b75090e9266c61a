"""The catalog: which models the cluster runs and every version deployed, beside the records.

``lambdaml deploy`` registers each version it runs (with its OpenAPI document, kept in the
artifact's manifest) and ``delete`` marks the model deleted, so ``/v1/models`` answers
from the database alone: describing a model never loads its code or wakes a replica.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lambdaml import _clock
from lambdaml.control.records import Records
from lambdaml.control.tables import model_versions, models, predictions


class Catalog:
    """The ``models`` and ``model_versions`` tables of a records database."""

    def __init__(self, records: Records) -> None:
        self._records = records

    def register(self, name: str, version: str, created_at: str, visibility: str, openapi: dict[str, Any] | None) -> None:
        """``version`` of ``name`` runs now (a redeploy or rollback of a known version just moves the pointer)."""
        now = _clock.now()
        with self._records.write() as connection:
            known = sa.select(model_versions.c.version).where(model_versions.c.model == name, model_versions.c.version == version)
            if connection.execute(known).first() is None:
                connection.execute(sa.insert(model_versions).values(
                    model=name, version=version, created_at=created_at or now, openapi=openapi))
            elif openapi is not None:
                connection.execute(sa.update(model_versions).where(
                    model_versions.c.model == name, model_versions.c.version == version).values(openapi=openapi))
            row = {"version": version, "visibility": visibility, "deployed_at": now, "deleted_at": None}
            if not connection.execute(sa.update(models).where(models.c.name == name).values(**row)).rowcount:
                connection.execute(sa.insert(models).values(name=name, **row))

    def forget(self, name: str) -> None:
        """``name`` was deleted: it leaves the list (its versions and records stay)."""
        with self._records.write() as connection:
            connection.execute(sa.update(models).where(models.c.name == name).values(deleted_at=_clock.now()))

    def models(self, name: str | None = None, counted: bool = True) -> list[dict[str, Any]]:
        """The models running now (or just ``name``), by name, with their prediction counts (``counted``).

        A create through /v1 only needs to find the model: it skips the count, a scan of the
        model's records.
        """
        query = sa.select(models).where(models.c.deleted_at.is_(None)).order_by(models.c.name)
        if name is not None:
            query = query.where(models.c.name == name)
        counts = sa.select(predictions.c.model, sa.func.count()).group_by(predictions.c.model)
        if name is not None:
            counts = counts.where(predictions.c.model == name)
        with self._records.reader.connect() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
            if not counted:
                return rows
            run_counts = dict(connection.execute(counts).all()) if rows else {}
        return [{**row, "run_count": int(run_counts.get(row["name"], 0))} for row in rows]

    def versions(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        """The versions of ``name`` (or just ``version``), newest first."""
        query = sa.select(model_versions).where(model_versions.c.model == name)
        if version is not None:
            query = query.where(model_versions.c.version == version)
        with self._records.reader.connect() as connection:
            rows = connection.execute(query.order_by(model_versions.c.created_at.desc())).mappings().all()
        return [dict(row) for row in rows]
