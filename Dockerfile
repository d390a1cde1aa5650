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
ENV CONVEYOR_HOST=0.0.0.0 \
    CONVEYOR_PORT=8000 \
    CONVEYOR_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["conveyor"]
CMD ["serve"]
