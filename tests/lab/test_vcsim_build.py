"""lab/vcsim/build.py: building never installs packages; the install is its own explicit step."""

from __future__ import annotations

import subprocess

import pytest

from lab.vcsim import build as vb


@pytest.fixture
def no_toolchain(tmp_path, monkeypatch):
    """An empty cache and no go/govmomi; any subprocess (apt-get, go) fails the test."""
    monkeypatch.setenv("DSM_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(vb, "_have_toolchain", lambda: False)
    calls: list[object] = []

    def refuse(cmd, *a, **kw):
        calls.append(cmd)
        raise AssertionError(f"unexpected subprocess {cmd!r}")

    monkeypatch.setattr(subprocess, "run", refuse)
    return calls


def test_build_without_the_toolchain_says_how_to_install_and_runs_nothing(no_toolchain):
    with pytest.raises(vb.BuildError) as err:
        vb.build()
    assert "--install-deps" in str(err.value) and "golang-go" in str(err.value)
    assert no_toolchain == []


def test_check_reports_the_missing_toolchain(no_toolchain, capsys):
    assert vb.main(["--check"]) == 1
    assert "--install-deps" in capsys.readouterr().err
    assert no_toolchain == []


def test_install_deps_needs_root(no_toolchain, monkeypatch, capsys):
    monkeypatch.setattr(vb.os, "geteuid", lambda: 1000)
    assert vb.main(["--install-deps"]) == 1
    assert "needs root" in capsys.readouterr().err
    assert no_toolchain == []


def test_a_cached_binary_is_used_without_the_toolchain(no_toolchain):
    target = vb.binary_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    assert vb.build() == target and vb.main(["--check"]) == 0
    assert no_toolchain == []
