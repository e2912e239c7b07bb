# syntax=docker/dockerfile:1
# Spaceport stage image: ONE image runs all three stages (`spaceport stage sfm|train|compress`).
#
# Why one image and not three: the stages are one Python package with one pinned dependency set
# (pyproject.toml's `stages` extra), the runner imports only the stage it runs, and a node that runs
# train usually runs sfm and compress of the same Reconstruction too, so the layers are pulled once.
# Three images would triple the build matrix and let the stages' versions drift apart, for a saving
# that only CPU-only nodes see (they skip the CUDA libraries). Pools may still point a stage at another
# image (chart values `stages.<name>.image`), e.g. the CPU variant below for sfm/compress-only nodes.
#
# Variants (build arguments):
#   default (GPU): CUDA 13.0 base, torch==2.13.0 from PyPI (a CUDA 13.0 build: its wheel requires
#                  cuda-toolkit==13.0.3), gsplat's CUDA kernels compiled at build time by the base's nvcc
#                  13.0 (no JIT on first use: nvcc is not in the runtime image, the root filesystem is
#                  read-only, and a JIT build would cost minutes in every Job). Nodes need an NVIDIA
#                  driver >= 580.65.06 (CUDA 13.0's minimum); the train stage says so at startup otherwise.
#   CUDA 12.8 (drivers 525.60.13 to 580): BUILD_BASE=nvidia/cuda:12.8.1-devel-ubuntu24.04
#                  RUNTIME_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
#                  TORCH_INDEX_URL=<PyTorch's cu128 wheel index> (pip then takes 2.13.0+cu128).
#   CPU (kind, CI): BUILD_BASE=RUNTIME_BASE=ubuntu:24.04 GSPLAT_BUILD_NO_CUDA=1
#                   TORCH_INDEX_URL=<a PyTorch CPU wheel index>; training then uses our numba rasterizer.
# torch's extension builder refuses an nvcc whose major version differs from torch's CUDA build, so the
# base's CUDA major must be the torch wheel's: `make images` runs images/check_pins.py on these build
# arguments first, and tests/images/test_cuda_pins.py checks the defaults (images/cuda-pins.json records
# each wheel's CUDA from its metadata).
#
# Nothing is written outside /scratch (an emptyDir the operator mounts in every stage Pod): HOME,
# TMPDIR and every cache (numba, torch extensions, matplotlib, XDG) point there.

ARG BUILD_BASE=nvidia/cuda:13.0.2-devel-ubuntu24.04
ARG RUNTIME_BASE=nvidia/cuda:13.0.2-runtime-ubuntu24.04

# The PlayCanvas viewer files (copied next to each compressed output); versions from package-lock.json.
FROM node:22.21.1-bookworm-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error

# hadolint ignore=DL3006
FROM ${BUILD_BASE} AS build
ARG TORCH_INDEX_URL=""
ARG GSPLAT_BUILD_NO_CUDA=0
# GPU generations the gsplat kernels are compiled for: T4, A100, A10/RTX 30xx, L4/RTX 40xx, H100/H200,
# B200, RTX 50xx (CUDA 13 starts at 7.5); +PTX also embeds 12.0's PTX, which the driver compiles for
# GPUs newer than the list (instead of "no kernel image is available for execution on the device").
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} BUILD_NO_CUDA=${GSPLAT_BUILD_NO_CUDA} MAX_JOBS=4
# Ubuntu's pocket versions move with security updates and old ones leave the archive; the base tag
# pins the release instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3.12 -m venv /opt/spaceport
ENV PATH=/opt/spaceport/bin:$PATH
WORKDIR /src
# torch first, so that gsplat compiles against exactly this build (same pin as pyproject.toml).
# An extra index (not a replacement): pip then prefers its 2.13.0+cpu over PyPI's CUDA build.
RUN if [ -n "$TORCH_INDEX_URL" ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"; fi \
    && pip install torch==2.13.0
# --no-binary: PyPI's gsplat wheel defers its CUDA build to the first call (JIT); the source build
# compiles it here. --no-build-isolation: gsplat's setup.py imports the torch installed above.
RUN pip install ninja==1.13.0 setuptools==80.9.0 wheel==0.45.1 \
    && pip install --no-build-isolation --no-binary gsplat gsplat==1.5.3
COPY pyproject.toml README.md ./
COPY operator ./operator
# The package, its `stages` extra and its `gpu` extra (LPIPS): every version comes from pyproject.toml.
# LPIPS's AlexNet weights are fetched now, into a folder the Jobs only read (TORCH_HOME below).
# hadolint ignore=DL3013
RUN pip install --no-compile ".[stages,gpu]" \
    && TORCH_HOME=/opt/spaceport/torch python -c "import lpips; lpips.LPIPS(net='alex', verbose=False)" \
    && python -m compileall -q /opt/spaceport/lib

# hadolint ignore=DL3006
FROM ${RUNTIME_BASE}
LABEL org.opencontainers.image.title="spaceport-stage" \
      org.opencontainers.image.description="Spaceport pipeline stages: sfm (pycolmap), train (gsplat), compress (SOG)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# UID/GID 10001: the operator runs stage Pods as this user (RUN_AS_UID in controller/jobs.py).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 spaceport \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /scratch --shell /usr/sbin/nologin spaceport \
    && mkdir -p /scratch \
    && chown 10001:10001 /scratch
COPY --from=build /opt/spaceport /opt/spaceport
COPY --from=web /web/node_modules/@playcanvas/supersplat-viewer /opt/spaceport/web/supersplat-viewer
ENV PATH=/opt/spaceport/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/scratch \
    TMPDIR=/scratch \
    XDG_CACHE_HOME=/scratch/.cache \
    NUMBA_CACHE_DIR=/scratch/.cache/numba \
    TORCH_EXTENSIONS_DIR=/scratch/.cache/torch_extensions \
    TORCH_HOME=/opt/spaceport/torch \
    MPLCONFIGDIR=/scratch/.cache/matplotlib \
    SPACEPORT_VIEWER_ASSETS=/opt/spaceport/web/supersplat-viewer/public \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /scratch
USER 10001:10001
ENTRYPOINT ["spaceport"]
CMD ["stage", "--help"]
