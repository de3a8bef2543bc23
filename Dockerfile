# The IntelGraph Streams engine image, for docker-compose.yml (the genuine services) or a cluster.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libsodium-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["igflow"]
CMD ["--help"]
