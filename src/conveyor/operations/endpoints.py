"""/healthz, /readyz and /metrics: what a load balancer, Kubernetes and Prometheus ask.

`/healthz` answers while the process runs (restart it when it does not). `/readyz` answers
200 only while the process can do its work: Conveyor's database answers, every migration of
this code is applied, the LISTEN connection is up, a worker (if the process runs one) is
claiming, and the process is not draining; else 503 with the failing checks. Neither needs a
token. `/metrics` is for a scraper only: it needs `CONVEYOR_METRICS_TOKEN` as a bearer token,
or a client address in `CONVEYOR_METRICS_NETWORKS`.
"""

import asyncio
import hmac
import ipaddress
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conveyor.db import monitoring
from conveyor.domain.targets import InstanceNetworks
from conveyor.events.listener import EventListener
from conveyor.operations.metrics import DATABASE_WAIT_SECONDS, Metrics
from conveyor.runner.worker import Worker
from conveyor.settings import Settings

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Readiness:
    """What the process has running; set up as it starts, and draining once it is told to
    stop."""

    listener: EventListener | None = None
    worker: Worker | None = None
    draining: bool = False

    async def checks(self) -> dict[str, bool]:
        """Each condition of readiness, and whether it holds."""
        database = migrations = False
        try:
            async with asyncio.timeout(DATABASE_WAIT_SECONDS):
                missing = await monitoring.missing_migrations()
        except Exception:
            # Whatever the failure (refused, timed out, a dropped connection), the database
            # did not answer; the outage itself is logged by the process's loops.
            pass
        else:
            database, migrations = True, not missing
        checks = {
            "database": database,
            "migrations": migrations,
            "listener": self.listener is not None and self.listener.connected,
            "notDraining": not self.draining,
        }
        if self.worker is not None:
            checks["workerClaiming"] = self.worker.claiming
        return checks


class OperationsEndpoints:
    def __init__(self, settings: Settings, metrics: Metrics, readiness: Readiness) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self._token = settings.metrics_token
        self._networks = InstanceNetworks.parse(settings.metrics_networks)

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.scrape),
        ]

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        checks = await self.readiness.checks()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def scrape(self, request: Request) -> Response:
        if not self._may_scrape(request):
            return PlainTextResponse(
                "send CONVEYOR_METRICS_TOKEN as a bearer token, or scrape from one of "
                "CONVEYOR_METRICS_NETWORKS",
                status_code=403,
            )
        return Response(await self.metrics.exposition(), media_type=PROMETHEUS_TEXT)

    def _may_scrape(self, request: Request) -> bool:
        if self._token:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), self._token.encode()
            ):
                return True
        if request.client is None or not self._networks.restricted:
            return False
        try:
            address = ipaddress.ip_address(request.client.host)
        except ValueError:
            return False
        return self._networks.allows(address)
