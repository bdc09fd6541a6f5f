"""The MCP memory server's tool argument and result schemas, as pydantic models.

This module owns the shapes: the reference memory server's zod schemas
(``EntitySchema``, ``RelationSchema`` and its tools' input and output objects,
field names and descriptions kept, ``from`` via an alias) and the result
shapes of inmem's own tools. The SDK derives each tool's ``inputSchema`` and
``outputSchema`` (JSON Schema) from them. Invariant: dumped ``by_alias``, a
model is exactly the JSON object the reference server sends.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AddResults", "Added", "Change", "ChangedEntity", "Diff", "Entities", "Entity", "EntityDiff", "Graph",
           "History", "Hit", "ObservationAdd", "ObservationDelete", "Relation", "RelationDiff", "Relations",
           "Replayed", "RunItem", "Runs", "SearchResults", "Status"]


class Entity(BaseModel):
    name: str = Field(description="The name of the entity")
    entityType: str = Field(description="The type of the entity")
    observations: list[str] = Field(description="An array of observation contents associated with the entity")


class Relation(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from", description="The name of the entity where the relation starts")
    to: str = Field(description="The name of the entity where the relation ends")
    relationType: str = Field(description="The type of the relation")


class ObservationAdd(BaseModel):
    entityName: str = Field(description="The name of the entity to add the observations to")
    contents: list[str] = Field(description="An array of observation contents to add")


class ObservationDelete(BaseModel):
    entityName: str = Field(description="The name of the entity containing the observations")
    observations: list[str] = Field(description="An array of observations to delete")


class Entities(BaseModel):
    entities: list[Entity]


class Relations(BaseModel):
    relations: list[Relation]


class Added(BaseModel):
    entityName: str
    addedObservations: list[str]


class AddResults(BaseModel):
    results: list[Added]


class Status(BaseModel):
    success: bool
    message: str


class Graph(BaseModel):
    entities: list[Entity]
    relations: list[Relation]


class Hit(BaseModel):
    entity: Entity
    score: float = Field(description="BM25 score (text mode) or reciprocal-rank-fusion score (hybrid, vector: cosine)")


class SearchResults(BaseModel):
    mode: str = Field(description="The mode used: 'text', 'vector' or 'hybrid'")
    results: list[Hit]


class Change(BaseModel):
    version: int = Field(description="Commit version")
    ts: str = Field(description="Commit time, UTC, ISO 8601")
    op: str = Field(description="add_node, update_node, delete_node, add_edge, update_edge or remove_edge")
    before: Entity | Relation | None = None
    after: Entity | Relation | None = None


class History(BaseModel):
    name: str
    changes: list[Change]


class RunItem(BaseModel):
    id: str
    name: str | None
    status: str
    tags: list[str]
    parent: str | None
    started_at: str
    last_version: int
    memory: bool = Field(description="Whether this is the run the server's graph lives in")


class Runs(BaseModel):
    runs: list[RunItem]


class Replayed(BaseModel):
    run: str
    version: int
    entities: list[Entity]
    relations: list[Relation]


class ChangedEntity(BaseModel):
    name: str
    before: Entity
    after: Entity


class EntityDiff(BaseModel):
    added: list[Entity]
    removed: list[Entity]
    changed: list[ChangedEntity]


class RelationDiff(BaseModel):
    added: list[Relation]
    removed: list[Relation]


class Diff(BaseModel):
    a: str
    b: str
    version_a: int
    version_b: int
    entities: EntityDiff
    relations: RelationDiff
    same: bool
