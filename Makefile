# The two commands a new user runs: `make demo` and `make test`.
# Both set up everything they need on a fresh Debian machine.
# The interpreter the venv is made from: the distribution's /usr/bin/python3 when there is
# one. Debian builds it with profile-guided optimisation and LTO, libpython linked in; a
# pyenv build with neither and a shared libpython (this machine's `python3` on PATH) ran
# slsfs's Python slower (2026-12-03, load < 1.5): 100 MiB Redis under redis-benchmark, the
# capture's stop median 5.2-6.0 -> 4.2-4.9 ms (bench/redis_stop.py, 3 interleaved pairs); the
# group daemon's imports before a restore after a crash 156-227 -> 121-181 ms (bench/groups.py,
# 3 and 4 runs). Through the whole daemon (groups.py --redis-only, 100 MiB, 1 vs 2 runs) the stop
# (5.5 vs 5.6-5.7 ms) and its CPU per SET (14.7 vs 13.7-16.0 us) moved less than their noise.
# Expanded when used, after `system` installed python3-venv (and so python3).
# `make PYTHON=...` chooses another; an existing .venv is kept (`make clean` first).
PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3)
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := python3-venv fuse3 libfuse3-dev pkg-config gcc libc6-dev gdb redis-server postgresql strace

.PHONY: setup system venv bytecode install demo test bench clean

setup: system venv bytecode

system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# editable_mode=compat: the venv finds the packages through a path in a .pth file; the
# default mode's import finder (importlib.util, pathlib, ...) cost every `sls` command and
# every daemon start ~10-35 ms before its first line (a restore after a crash waits for two).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: system $(VENV)/.installed

# Bytecode of the project's packages. The editable install compiles none (a regular pip
# install does), and with PYTHONDONTWRITEBYTECODE=1 every `sls` command and every daemon
# would compile ~25k lines again at each start (~0.2 s of CPU of an `sls restore`).
# checked-hash: the interpreter compares each file's hash, so an edited file never runs stale.
bytecode: venv
	$(PY) -m compileall -q --invalidation-mode checked-hash objectstore mount checkpointer slsfs

# `mount -t fuse.slsfs STORE MNT -o volume=V` and fstab lines run the program `slsfs`
# (through mount.fuse3, which searches /usr/local/sbin:/usr/local/bin:/usr/sbin:...)
install: venv
	ln -sf $(CURDIR)/$(VENV)/bin/slsfs /usr/local/sbin/slsfs

demo: setup
	$(PY) -m slsfs.demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/objectstore.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
