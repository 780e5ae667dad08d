# Stand-in for python:3.11-slim-bookworm where no image registry is reachable: Debian 12's
# Python 3.11 with venv, and `python` on the PATH as in the official image.
ARG BASE_IMAGE=localhost/td-local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv python-is-python3 >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# The base carries this machine's CA bundle; pip reads certifi's unless told.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
