"""The pipeline page at ``/`` and its files at ``/page-assets``.

The page is a client of the public GraphQL API only: plain ES modules (``static/app/``) on
Preact, htm and graphql-ws, vendored from npm into ``static/vendor/`` by
``scripts/vendor-graphiql``, which checks them against the ``integrity`` hashes that
``static/index.html`` carries. Nothing is fetched from anywhere but this server.
"""

import base64
import hashlib
import html
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route

from conveyor.graphql.ide import VersionedAssetFiles

__all__ = [
    "PAGE_ASSETS_PATH",
    "PAGE_STATIC_DIR",
    "content_security_policy",
    "page_routes",
    "render_page",
]

#: The URL prefix of the page's scripts, styles and vendored libraries.
PAGE_ASSETS_PATH = "/page-assets"

#: The page's template, its own modules and the vendored libraries.
PAGE_STATIC_DIR = Path(__file__).resolve().parent / "static"

_ASSETS_PLACEHOLDER = "{{ CONVEYOR_PAGE_ASSETS_URL }}"
_GRAPHQL_PLACEHOLDER = "{{ CONVEYOR_GRAPHQL_URL }}"
_TEMPLATE = (PAGE_STATIC_DIR / "index.html").read_text(encoding="utf-8")
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)


def content_security_policy(page: str) -> str:
    """The page's policy: everything from this server only, and of inline script only the
    import map, by its hash (the browser then refuses anything else, e.g. injected markup's
    scripts or a request to another host)."""
    found = _IMPORT_MAP.search(page)
    if found is None:  # pragma: no cover - guards a hand-edited template
        raise RuntimeError("the page's template has no import map")
    digest = base64.b64encode(hashlib.sha256(found[1].encode()).digest()).decode()
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' 'sha256-{digest}'",
            "style-src 'self'",
            "style-src-attr 'unsafe-inline'",  # the progress bars' widths
            "img-src 'self' data:",
            "connect-src 'self'",  # same-origin fetch and WebSocket
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def render_page(base_path: str) -> str:
    """The page's HTML for an application mounted at `base_path` (ASGI ``root_path``)."""
    base = html.escape(base_path.rstrip("/"), quote=True)
    return _TEMPLATE.replace(_ASSETS_PLACEHOLDER, base + PAGE_ASSETS_PATH).replace(
        _GRAPHQL_PLACEHOLDER, base + "/graphql"
    )


async def _page(request: Request) -> HTMLResponse:
    # Served without a token, like GraphiQL: the page asks for one and sends it itself.
    page = render_page(request.base_url.path)
    return HTMLResponse(
        page,
        headers={
            "cache-control": "no-cache",
            "content-security-policy": content_security_policy(page),
        },
    )


def page_routes() -> list[BaseRoute]:
    """The page and its files; add them to the application's top-level routes."""
    return [
        Route("/", _page, methods=["GET"]),
        Mount(
            PAGE_ASSETS_PATH,
            app=VersionedAssetFiles(directory=PAGE_STATIC_DIR),
            name="page-assets",
        ),
    ]
