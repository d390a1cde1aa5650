"""GraphiQL at ``/graphql`` without internet access.

strawberry's built-in GraphiQL page loads React, GraphiQL and the explorer plugin from
unpkg.com, and strawberry has no setting to change that. This module serves byte-identical
copies of those files (vendored in ``static/graphiql/`` by ``scripts/vendor-graphiql``, which
checks them against the page's ``integrity`` hashes) and renders strawberry's page, kept as
our own copy in ``static/graphiql/graphiql.html``, with the CDN URLs pointing at them.

Our copy adds an "API token" field at the top right, since every GraphQL request needs a
token and a browser cannot be told to send one. The page keeps what a person pastes there in
the tab's sessionStorage and sends it as ``Authorization: Bearer <token>`` with every
operation and schema fetch over HTTP, and as the ``connection_init`` payload of the
WebSocket of a subscription. An Authorization header typed into GraphiQL's Headers editor
wins over the field. The page itself is served without a token.

Wiring, in a Starlette app::

    class GraphQLView(OfflineGraphiQLMixin, strawberry.asgi.GraphQL[Context, None]): ...

    view = GraphQLView(schema)
    Starlette(routes=[
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", view),
        graphiql_assets_mount(),          # serves GRAPHIQL_ASSETS_PATH = "/graphiql-assets"
    ])

The hook is strawberry's ``render_graphql_ide(request)`` method of the ASGI view, which the
view calls for a browser's GET (``Accept: text/html``, no ``query`` parameter) when
``graphql_ide`` is set. ``OfflineGraphiQLMixin`` overrides it to return our page when
``graphql_ide == "graphiql"`` (the default) and strawberry's own page for the other IDEs.
The assets URL honours the ASGI ``root_path`` (``uvicorn --root-path``), so the app also
works behind a path prefix. The mount must be at the application's top level.

Public API:

- ``GRAPHIQL_ASSETS_PATH``: the URL prefix of the assets, ``"/graphiql-assets"``.
- ``GRAPHIQL_STATIC_DIR``: the folder of the vendored files.
- ``graphiql_assets_mount()``: a Starlette ``Mount`` serving that folder (versioned files
  with a one-year immutable cache lifetime).
- ``render_graphiql_page(graphql_path="/graphql", *, assets_path=GRAPHIQL_ASSETS_PATH)``:
  the page's HTML.
- ``OfflineGraphiQLMixin``: the view side, as described above.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from strawberry.http.ides import GraphQL_IDE, get_graphql_ide_html

__all__ = [
    "GRAPHIQL_ASSETS_PATH",
    "GRAPHIQL_STATIC_DIR",
    "OfflineGraphiQLMixin",
    "VersionedAssetFiles",
    "graphiql_assets_mount",
    "render_graphiql_page",
]

#: The URL prefix under which the vendored GraphiQL files are served.
GRAPHIQL_ASSETS_PATH = "/graphiql-assets"

#: The vendored files (and our copy of strawberry's page, ``graphiql.html``).
GRAPHIQL_STATIC_DIR = Path(__file__).resolve().parent / "static" / "graphiql"

#: The name of the assets mount, for ``request.url_for(GRAPHIQL_ASSETS_ROUTE_NAME, path=...)``.
GRAPHIQL_ASSETS_ROUTE_NAME = "graphiql-assets"

# The placeholders scripts/vendor-graphiql puts into the template. strawberry's own page
# (0.341.2) has none: it takes the GraphQL URL from `window.location` in the browser.
_ASSETS_PLACEHOLDER = "{{ CONVEYOR_GRAPHIQL_ASSETS_URL }}"
_FETCH_URL_PLACEHOLDER = "{{ CONVEYOR_GRAPHQL_FETCH_URL }}"

#: strawberry's expression for the GraphQL URL: the page's own URL without the query.
_PAGE_URL_EXPRESSION = 'window.location.href.split("?")[0]'

_TEMPLATE = (GRAPHIQL_STATIC_DIR / "graphiql.html").read_text(encoding="utf-8")
if _ASSETS_PLACEHOLDER not in _TEMPLATE or _TEMPLATE.count(_FETCH_URL_PLACEHOLDER) != 1:
    raise RuntimeError(  # pragma: no cover - guards a hand-edited template
        f"{GRAPHIQL_STATIC_DIR / 'graphiql.html'} lacks its placeholders; "
        "regenerate it with scripts/vendor-graphiql"
    )

# A vendored file lives under "<package>@<version>/", so its content never changes.
_VERSIONED_FILE = re.compile(r"(?:.+/)?(?:@[^/]+/)?[^/@]+@[^/]+/.+")
_IMMUTABLE = "public, max-age=31536000, immutable"


def _js_string(value: str) -> str:
    """`value` as a JavaScript string literal that is safe inside a <script> element."""
    return (
        json.dumps(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_graphiql_page(
    graphql_path: str | None = "/graphql", *, assets_path: str = GRAPHIQL_ASSETS_PATH
) -> str:
    """strawberry's GraphiQL page, loading its scripts and styles from `assets_path`.

    `graphql_path` is where the page sends queries; the browser resolves it against the
    page's own URL, so a path (``"/graphql"``) or a full URL both work, and subscriptions
    use the WebSocket URL derived from it (``ws://`` / ``wss://``, same host). ``None`` keeps
    strawberry's behaviour: the page's own URL, which suits a page served by the GraphQL
    view itself. `assets_path` is the URL prefix of the vendored files (a path or an
    absolute URL, no trailing slash needed).
    """
    fetch_url = (
        _PAGE_URL_EXPRESSION
        if graphql_path is None
        else f"new URL({_js_string(graphql_path)}, window.location.href).href"
    )
    return _TEMPLATE.replace(
        _ASSETS_PLACEHOLDER, html.escape(assets_path.rstrip("/"), quote=True)
    ).replace(_FETCH_URL_PLACEHOLDER, fetch_url)


class VersionedAssetFiles(StaticFiles):
    """StaticFiles that lets browsers cache the versioned files (under
    ``<package>@<version>/``) for a year, and has them check the others on every use."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        try:
            root = Path(str(self.directory)).resolve()
            relative = Path(full_path).resolve().relative_to(root).as_posix()
        except ValueError:  # pragma: no cover - outside the folder (symlinks)
            relative = ""
        versioned = _VERSIONED_FILE.fullmatch(relative) is not None
        response.headers["cache-control"] = _IMMUTABLE if versioned else "no-cache"
        return response


def graphiql_assets_mount(path: str = GRAPHIQL_ASSETS_PATH) -> Mount:
    """A route serving the vendored GraphiQL files under `path`; add it to the app's routes."""
    return Mount(
        path,
        app=VersionedAssetFiles(directory=GRAPHIQL_STATIC_DIR),
        name=GRAPHIQL_ASSETS_ROUTE_NAME,
    )


def assets_path_for(request: Request) -> str:
    """The URL path of the assets mount as the browser sees it (honours ``root_path``)."""
    return request.base_url.path.rstrip("/") + GRAPHIQL_ASSETS_PATH


class OfflineGraphiQLMixin:
    """Mix into a ``strawberry.asgi.GraphQL`` view, before it, to serve the offline page."""

    graphql_ide: GraphQL_IDE | None

    async def render_graphql_ide(self, request: Request) -> Response:
        if self.graphql_ide != "graphiql":
            return HTMLResponse(get_graphql_ide_html(graphql_ide=self.graphql_ide))
        return HTMLResponse(render_graphiql_page(None, assets_path=assets_path_for(request)))
