# PixyProxy's image: one image, one command per process kind.
#   docker run IMAGE                      -> pixyproxy serve --host 0.0.0.0   (the API, port 8000)
#   docker run IMAGE worker               -> pixyproxy worker                  (runs jobs from RabbitMQ)
#   docker run IMAGE init-db              -> pixyproxy init-db                 (creates the schema, once)
# Linted by `make hadolint` (part of `make test`); not built on the project's machines, which have
# no container engine. Configure it with the PIXYPROXY_* variables of README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIXYPROXY_DATA_DIR=/data

# A fixed uid, so volume ownership is the same on every host.
RUN useradd --create-home --uid 10001 --user-group pixyproxy \
    && install -d -o pixyproxy -g pixyproxy /data

WORKDIR /app

# The locked runtime dependencies first, with their hashes: this layer changes only with the lock.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# Then PixyProxy itself, without resolving anything again.
COPY pyproject.toml README.md ./
COPY pixyproxy ./pixyproxy
RUN pip install --no-cache-dir --no-deps .

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

# slim has no curl: ask /healthz with Python. Only the API answers it; compose turns it off for workers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["pixyproxy"]
CMD ["serve", "--host", "0.0.0.0"]
