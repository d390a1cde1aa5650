"""The limit for nested reads: PostgreSQL builds the whole response JSON in one query.

    python bench/tree_limit.py DATABASE_URL PORT

POST / with {"id": N} answers Conveyor's `node(id:)` tree of pipeline N, with {"first": N}
its `pipelines(first:)` page; the same response shape and global ids as Conveyor's, with no
GraphQL execution. One uvicorn process, one asyncpg pool, as `conveyor serve` has.
"""

import contextlib
import json
import sys
from collections.abc import AsyncIterator

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def global_id(type_name: str, column: str) -> str:
    """strawberry's relay GlobalID: base64 of "Type:id"."""
    return f"encode(convert_to('{type_name}:' || {column}, 'UTF8'), 'base64')"


#: One pipeline `p` as Conveyor's `Tree` fragment.
PIPELINE_TREE = f"""
json_build_object(
  'id', {global_id("Pipeline", "p.id")},
  'status', p.status,
  'stages', (
    SELECT coalesce(json_agg(json_build_object(
      'id', {global_id("Stage", "s.id")},
      'name', s.name,
      'position', s.position,
      'environment', json_build_object(
        'id', {global_id("Environment", "e.id")},
        'name', e.name,
        'approvalPolicy', e.approval_policy),
      'tasks', (
        SELECT coalesce(json_agg(json_build_object(
          'id', {global_id("Task", "t.id")},
          'name', t.name,
          'type', t.type,
          'status', t.status,
          'statement', t.statement,
          'version', t.version,
          'instance', json_build_object(
            'id', {global_id("Instance", "i.id")},
            'name', i.name,
            'host', i.host,
            'port', i.port),
          'database', CASE WHEN d.id IS NULL THEN NULL ELSE json_build_object(
            'id', {global_id("Database", "d.id")},
            'name', d.name) END
        ) ORDER BY t.position), '[]')
        FROM task t
        JOIN instance i ON i.id = t.instance_id
        LEFT JOIN database d ON d.id = t.database_id
        WHERE t.stage_id = s.id)
    ) ORDER BY s.position), '[]')
    FROM stage s JOIN environment e ON e.id = s.environment_id
    WHERE s.pipeline_id = p.id)
)
"""
ONE_PIPELINE = f"""
SELECT json_build_object('data', json_build_object('node', (
  SELECT {PIPELINE_TREE} FROM pipeline p WHERE p.id = $1
)))::text
"""
PAGE_OF_PIPELINES = f"""
SELECT json_build_object('data', json_build_object('pipelines', json_build_object('edges', (
  SELECT coalesce(json_agg(json_build_object('node', {PIPELINE_TREE}) ORDER BY p.id DESC), '[]')
  FROM (SELECT * FROM pipeline ORDER BY id DESC LIMIT $1) p
))))::text
"""


def create_app(database_url: str, pool_max_size: int = 10) -> Starlette:
    pool: asyncpg.Pool | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        async with asyncpg.create_pool(database_url, min_size=1, max_size=pool_max_size) as pool:
            yield

    async def tree(request: Request) -> Response:
        assert pool is not None
        body = json.loads(await request.body())
        if "id" in body:
            text = await pool.fetchval(ONE_PIPELINE, int(body["id"]))
        else:
            text = await pool.fetchval(PAGE_OF_PIPELINES, int(body["first"]))
        return Response(text.encode(), media_type="application/json")

    return Starlette(routes=[Route("/", tree, methods=["POST"])], lifespan=lifespan)


if __name__ == "__main__":
    uvicorn.run(
        create_app(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
        server_header=False,
    )
