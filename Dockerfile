# The IntelGraph Streams engine image, for docker-compose.yml (the genuine services) or a cluster.
# Two stages: the first builds the wheel (compiling psi._sodium against libsodium and
# core._rowhash against OpenSSL's libcrypto), the second installs that wheel, not the source
# tree, so the image runs what `make wheel` ships.

# --- build: the wheel, with the cffi module psi._sodium (psi/_build_sodium.py) compiled in.
FROM python:3.11-slim-bookworm AS build
# gcc only recommends libc6-dev, whose headers (stdint.h, string.h) the module needs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libsodium-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore keeps out the venv, the stack's state, build output and host-built *.so.
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- runtime: the wheel and its dependencies; libsodium's shared library (libssl3 is in the
# base image: CPython's ssl and hashlib link it), no compiler.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsodium23 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/intelgraph_streams-*.whl \
    && rm -rf /tmp/dist \
    && igflow --help >/dev/null \
    && python -c "import psi._sodium, core._rowhash"
# State defaults to ./.stack (JWT dev keys, .pyiceberg.yaml) unless IGFLOW_* names a place;
# docker-compose.yml mounts volumes for the warehouse, recovery and keys.
WORKDIR /app
ENTRYPOINT ["igflow"]
CMD ["--help"]
