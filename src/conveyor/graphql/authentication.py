"""Every operation runs for a principal whose token is still usable.

Over HTTP the view authenticates each request before anything runs. A WebSocket authenticates
once, in connection_init, and may then stay open for days: its token is checked again when each
of its operations starts (one query), and an operation without a usable one is refused as a
whole, before validation lets any resolver run. Live subscriptions are re-checked by the event
hub as they go.
"""

from collections.abc import AsyncIterator

from graphql import DocumentNode
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension

from conveyor.db import tokens
from conveyor.errors import ErrorCode
from conveyor.graphql.context import Context
from conveyor.graphql.errors import document_refused
from conveyor.graphql.validation_cache import PerRequestRule


class RequireUsableToken(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context):
            if isinstance(context.request, WebSocket) and context.principal is not None:
                context.principal = await tokens.still_usable(context.principal)
            if context.principal is None:
                self.execution_context.validation_rules = (
                    *self.execution_context.validation_rules,
                    _RefuseDocument,
                )
        yield


class _RefuseDocument(PerRequestRule):
    def leave_document(self, node: DocumentNode, *_args: object) -> None:
        self.report_error(
            document_refused(
                ErrorCode.UNAUTHENTICATED,
                "this operation needs a usable token: the connection's token is missing, "
                "revoked or expired",
            )
        )
