"""The pipeline page's HTTP side: the page at /, its files, and their cache lifetimes."""

import httpx
from starlette.applications import Starlette

from conveyor.web.page import page_routes, render_page

VENDORED = "/page-assets/vendor/preact@11.2.0/dist/preact.mjs"


def test_the_page_points_at_its_files_and_the_api_under_the_applications_prefix() -> None:
    page = render_page("/conveyor/")
    assert '<meta name="conveyor-graphql" content="/conveyor/graphql" />' in page
    assert f'"/conveyor{VENDORED}": "sha384-' in page
    assert "{{" not in page.split("-->", 1)[1]


async def test_the_page_and_its_files_are_served_vendored_ones_cached_for_good() -> None:
    app = Starlette(routes=page_routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://conveyor") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert f'"{VENDORED}": "sha384-' in page.text
        vendored = await client.get(VENDORED)
        assert vendored.status_code == 200
        assert "immutable" in vendored.headers["cache-control"]
        own = await client.get("/page-assets/app/main.js")
        assert own.status_code == 200
        assert own.headers["cache-control"] == "no-cache"
