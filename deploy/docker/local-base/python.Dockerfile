# A local stand-in for python:3.11.14-slim-bookworm, for machines that reach PyPI but no
# image registry (docs/images.md, "Building here"). scripts/images.py builds it FROM the
# root filesystem mmdebstrap made (Debian 12 minbase with python3, python3-venv,
# python3-pip, ca-certificates, dumb-init), imported as ROOTFS, and tags the result with the
# official name so the project's Dockerfiles build unchanged (`podman build --pull=never`).
# What differs from the official image: Debian's Python 3.11.2 instead of 3.11.14, and
# Debian's pip; the layout is the official one (python and pip in /usr/local/bin, no
# "externally managed" marker, a UTF-8 locale).
ARG ROOTFS
FROM ${ROOTFS}
ENV LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/python3 /usr/local/bin/python3 \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
CMD ["python3"]
