# The project image: the `main` container role of cluster configs.
#
#   docker build --build-arg BASE_IMAGE=python:3.11-slim -t skills-cli:latest .
#
# BASE_IMAGE needs python3 (>= 3.10). With pip in the base image, EXTRAS selects the optional stacks to
# install (e.g. "train,trackers"); without pip (a minimal local image, as in the tests), the package is
# used from source through PYTHONPATH, which is enough for everything that has no third-party needs.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/skills-cli

COPY pyproject.toml README.md /opt/skills-cli/
COPY skills_cli /opt/skills-cli/skills_cli
COPY cluster_configs /opt/skills-cli/cluster_configs

RUN if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip install --no-cache-dir "/opt/skills-cli${EXTRAS:+[$EXTRAS]}"; \
    else \
        echo "no pip in the base image: using /opt/skills-cli from PYTHONPATH"; \
    fi \
    && python3 -c "import skills_cli, sys; print('skills-cli', skills_cli.__version__, 'on python', sys.version.split()[0])"

WORKDIR /workspace
CMD ["python3", "-m", "skills_cli", "--help"]
