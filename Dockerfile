# The gateway image used by docker-compose.yml: the package and its PostgreSQL driver.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY schemas_xml ./schemas_xml
RUN pip install --no-cache-dir ".[postgres]"
# The home volume (dev PKI, registry) is mounted here: it must belong to the user that writes it.
RUN useradd --create-home gateway && mkdir -p /var/lib/gateway && chown gateway:gateway /var/lib/gateway
USER gateway
