"""A compiled read's statement text is built once per plan and shape of arguments: the kept
text, with the parameters picked for a request, is the one the builder would make."""

import base64
from typing import Any

from graphql import parse
from graphql.execution.values import get_variable_values
from graphql.utilities import get_operation_ast

from conveyor.db.compiled_reads import Statement, statement
from conveyor.graphql.compiled.plan import Plan, arguments_of, compile_plan
from conveyor.graphql.schema import schema
from conveyor.settings import Settings

DOCUMENT = """
query($ids: [ID!]!, $status: PipelineStatus, $after: String, $first: Int) {
  nodes(ids: $ids) {
    ... on Pipeline {
      id status stages { name status tasks(first: $first) { name waitingReason { kind } } }
    }
    ... on Task { name availableActions }
  }
  pipelines(first: 3, status: $status, after: $after) { totalCount edges { cursor node { id } } }
}
"""


def global_id(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def built(plan: Plan, variables: dict[str, Any], *, kept: bool) -> Statement:
    graphql_schema = schema._schema
    operation = get_operation_ast(parse(DOCUMENT))
    assert operation is not None
    coerced = get_variable_values(graphql_schema, operation.variable_definitions or (), variables)
    assert not isinstance(coerced, list)
    return statement(
        plan.reads,
        lambda source: arguments_of(source, coerced, Settings()),
        spliced=plan.spliced,
        texts=plan.texts if kept else None,
    )


def a_plan() -> Plan:
    graphql_schema = schema._schema
    document = parse(DOCUMENT)
    operation = get_operation_ast(document)
    assert operation is not None
    coerced = get_variable_values(graphql_schema, operation.variable_definitions or (), {"ids": []})
    assert not isinstance(coerced, list)
    return compile_plan(graphql_schema, tuple(document.definitions), operation, coerced)


def test_a_kept_text_is_the_one_the_builder_makes_for_each_request() -> None:
    plan = a_plan()
    requests: list[dict[str, Any]] = [
        {"ids": [global_id("Pipeline", 1)]},
        {"ids": [global_id("Pipeline", 7)], "first": 5},
        {"ids": [global_id("Pipeline", 7), global_id("Task", 3)], "status": "OPEN"},
        {"ids": [global_id("Pipeline", 2), global_id("Task", 9)], "status": "DONE"},
        {"ids": [global_id("Task", 4)], "after": "Y3Vyc29yOjEw", "first": 2},
        {"ids": [global_id("Task", 5)], "after": "Y3Vyc29yOjEx"},
        {"ids": [global_id("Pipeline", 1)]},
    ]
    texts = []
    for variables in requests:
        kept = built(plan, variables, kept=True)
        fresh = built(plan, variables, kept=False)

        assert (kept.sql, kept.parameters, kept.markers) == (
            fresh.sql,
            fresh.parameters,
            fresh.markers,
        )
        texts.append(kept.sql)
    # Same shapes, same text object: built once.
    assert texts[1] is texts[0]
    assert texts[6] is texts[0]
    assert texts[3] is texts[2]
    assert texts[5] is texts[4]
    # Other node types, a filter or a cursor given: other texts.
    assert len({texts[0], texts[2], texts[4]}) == 3
    assert len(plan.texts[plan.spliced]) == 3
