"""The pipeline page's HTTP side: the page at /, its files, and their cache lifetimes."""

import base64
import hashlib
import json
import re

import httpx
from starlette.applications import Starlette

from conveyor.graphql.ide import graphiql_assets_mount
from conveyor.web.page import PAGE_STATIC_DIR, content_security_policy, page_routes, render_page

VENDORED = "/page-assets/vendor/preact@11.2.0/dist/preact.mjs"


def test_the_page_points_at_its_files_and_the_api_under_the_applications_prefix() -> None:
    page = render_page("/conveyor/")
    assert '<meta name="conveyor-graphql" content="/conveyor/graphql" />' in page
    assert f'"/conveyor{VENDORED}": "sha384-' in page
    assert "{{" not in page.split("-->", 1)[1]


async def test_the_page_and_its_files_are_served_vendored_ones_cached_for_good() -> None:
    app = Starlette(routes=[*page_routes(), graphiql_assets_mount()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://conveyor") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert f'"{VENDORED}": "sha384-' in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert policy == content_security_policy(page.text)
        vendored = await client.get(VENDORED)
        assert vendored.status_code == 200
        assert "immutable" in vendored.headers["cache-control"]
        own = await client.get("/page-assets/app/main.js")
        assert own.status_code == 200
        assert own.headers["cache-control"] == "no-cache"
        # GraphiQL's files, served by the same kind of mount, keep their cache lifetimes.
        graphiql = await client.get("/graphiql-assets/graphiql@3.8.3/graphiql.min.css")
        assert "immutable" in graphiql.headers["cache-control"]
        readme = await client.get("/graphiql-assets/README.md")
        assert readme.headers["cache-control"] == "no-cache"


def test_every_vendored_file_the_page_names_is_there_and_matches_its_hash() -> None:
    page = render_page("")
    found = re.search(r'<script type="importmap">(.*?)</script>', page, re.S)
    assert found is not None
    import_map = json.loads(found[1])
    named = dict(import_map["integrity"])
    named.update(re.findall(r'src="([^"]+)"\s+integrity="([^"]+)"', page))
    assert len(named) == 4, named
    assert set(import_map["imports"].values()) <= set(named)
    for url, integrity in named.items():
        path = PAGE_STATIC_DIR / url.removeprefix("/page-assets/")
        algorithm, expected = integrity.split("-", 1)
        digest = hashlib.new(algorithm, path.read_bytes()).digest()
        assert base64.b64encode(digest).decode() == expected, url
        package = PAGE_STATIC_DIR.joinpath(*path.relative_to(PAGE_STATIC_DIR).parts[:2])
        assert (package / "LICENSE").is_file(), f"{package.name} has no license"
