# Minimal runtime image for the core library. The deployment issue turns this into a multi-stage build
# with CPU and CUDA variants chosen by build argument.
FROM python:3.11.7-slim-bookworm
RUN useradd --create-home --uid 10001 microsnoop
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY microsnoop ./microsnoop
RUN pip install --no-cache-dir -c requirements.lock .
USER 10001
ENTRYPOINT ["microsnoop"]
