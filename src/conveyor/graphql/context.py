"""What every resolver gets: the request's loaders, its actor, and the app's services."""

from dataclasses import dataclass, field

import strawberry
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from conveyor.crypto import PasswordCipher
from conveyor.events.hub import EventHub
from conveyor.graphql.loaders import Loaders
from conveyor.settings import Settings

#: The header naming who acts, until real identities arrive.
ACTOR_HEADER = "x-conveyor-actor"
ANONYMOUS = "anonymous"


@dataclass
class Context:
    request: Request | WebSocket | None
    response: Response | None
    settings: Settings
    cipher: PasswordCipher
    actor: str = ANONYMOUS
    loaders: Loaders = field(default_factory=Loaders)
    #: The process's fan-out of new events; None where nothing serves subscriptions.
    hub: EventHub | None = None


Info = strawberry.Info[Context, None]
