# syntax=docker/dockerfile:1
# Spaceport operator image: the package WITHOUT the `stages` extra, so no torch, pycolmap or gsplat
# (~150 MB instead of several GB). Build from the repository root: `make images`.
#
# Python 3.11 is the interpreter the test suite runs on. The runtime layer writes nothing: bytecode
# is compiled at build time, HOME and TMPDIR point into /scratch (an emptyDir the chart mounts), so the
# container runs with readOnlyRootFilesystem: true.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Versions come from pyproject.toml ([project].dependencies); only the package itself is built here.
RUN python -m venv /opt/spaceport \
    && /opt/spaceport/bin/pip install --no-compile . \
    && /opt/spaceport/bin/python -m compileall -q /opt/spaceport/lib

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="spaceport-operator" \
      org.opencontainers.image.description="Kubernetes operator for Reconstruction resources (spaceport.dev)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/spaceport /opt/spaceport
# A fixed numeric UID lets `runAsNonRoot: true` be checked by the kubelet without a passwd lookup.
RUN groupadd --gid 10001 spaceport \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /scratch --shell /usr/sbin/nologin spaceport \
    && mkdir -p /scratch \
    && chown 10001:10001 /scratch
ENV PATH=/opt/spaceport/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/scratch \
    TMPDIR=/scratch
WORKDIR /scratch
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["spaceport"]
CMD ["operator", "--all-namespaces"]
