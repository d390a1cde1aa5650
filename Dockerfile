# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# No compiler or build tools in the final image: only the wheels built above.
RUN useradd --system --create-home --home-dir /home/conveyor conveyor \
    && mkdir /data && chown conveyor:conveyor /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER conveyor
# `conveyor worker` serves /healthz, /readyz and /metrics on CONVEYOR_METRICS_PORT; `conveyor
# serve` serves them beside /graphql on CONVEYOR_PORT.
ENV CONVEYOR_HOST=0.0.0.0 \
    CONVEYOR_PORT=8000 \
    CONVEYOR_METRICS_PORT=9100 \
    CONVEYOR_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000 9100
# Liveness: the process answers /healthz on whichever of the two ports its command serves.
# Readiness (/readyz) is for a load balancer or an orchestrator to ask, not Docker: an unhealthy
# container is restarted, and an outage of the database is no reason to restart one.
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-m", "conveyor.operations.probe"]
ENTRYPOINT ["conveyor"]
CMD ["serve"]
