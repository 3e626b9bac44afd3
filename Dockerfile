# The adamp-tune image: the optimizers, the service and the Ray worker code in one image, so
# that the API, the Ray head and every Ray worker run the same versions (Ray requires it).
#
#   docker build -t adamp-tune .                                    # torch from PyPI (CUDA on amd64)
#   docker build -t adamp-tune --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   docker run --rm -p 8000:8000 adamp-tune                         # embedded mode: SQLite + local Ray
#   docker run --rm adamp-tune adamp-tune --help
FROM python:3.11-slim

# torch goes in first and on its own, as in the Makefile: the pinned release, from the index
# given (empty: PyPI, whose linux/amd64 wheels are CUDA builds; for another CUDA or a CPU-only
# build use https://download.pytorch.org/whl/cuXXX or .../whl/cpu).
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN python -m pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"

# Then the project with the service extra (FastAPI, Optuna, Ray, SQLAlchemy, psycopg, ...),
# within the versions the test suite last passed with.
WORKDIR /opt/adamp-tune
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY adamp ./adamp
COPY db ./db
COPY service ./service
COPY workers ./workers
RUN python -m pip install -c constraints.txt ".[service]" \
    && python -c "import adamp, db.migrate, service.app, workers, torch, ray"

# Run as an unprivileged user; Ray keeps its session files under /tmp/ray and ~/.ray.
RUN useradd --create-home --uid 1000 --shell /bin/bash adamp \
    && mkdir /checkpoints && chown adamp /checkpoints  # a new volume mounted here keeps it
USER adamp
WORKDIR /home/adamp

EXPOSE 8000
# No ENTRYPOINT: any command runs (`ray start ...`, `adamp-tune token create ...`); the
# default serves on all interfaces, which makes authentication required (ADAMP_TUNE_AUTH=auto).
CMD ["adamp-tune", "serve", "--host", "0.0.0.0", "--port", "8000"]
