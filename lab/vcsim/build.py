"""Build lab/vcsim/main.go against Debian's govmomi and cache the binary by the hash of main.go.

    python -m lab.vcsim.build                  # build (or reuse) the binary; prints its path
    python -m lab.vcsim.build --install-deps   # first apt-get install the toolchain (root), then build
    python -m lab.vcsim.build --check          # exit 0 when a build is possible, else say what is missing

Installing Debian packages (golang-go, golang-github-vmware-govmomi-dev) is an explicit step that CI
and `make lab-deps` run as root; building never installs anything, so a test session never runs
apt-get. The binary lands in ~/.cache/dsm-lab/vcsim-<sha256 of main.go, 16 hex> (or $DSM_LAB_CACHE),
so a changed main.go is rebuilt and an unchanged one never is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAIN_GO = HERE / "main.go"
GOPATH = "/usr/share/gocode"
GOVMOMI = Path(GOPATH) / "src/github.com/vmware/govmomi/simulator"
PACKAGES = ("golang-go", "golang-github-vmware-govmomi-dev")


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("DSM_LAB_CACHE") or Path.home() / ".cache" / "dsm-lab")


def binary_path() -> Path:
    digest = hashlib.sha256(MAIN_GO.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"vcsim-{digest}"


def _have_toolchain() -> bool:
    return shutil.which("go") is not None and GOVMOMI.is_dir()


def missing_toolchain() -> str | None:
    """Why a build is impossible here (None when go and the govmomi sources are installed)."""
    if _have_toolchain():
        return None
    return (
        f"the Debian packages {' '.join(PACKAGES)} are not installed; run "
        "`python -m lab.vcsim.build --install-deps` as root (or `make lab-deps`)"
    )


def install_deps() -> None:
    """apt-get install the toolchain when it is missing (root only). The explicit setup step."""
    if _have_toolchain():
        return
    if os.geteuid() != 0:
        raise BuildError(f"installing {' '.join(PACKAGES)} needs root: run this as root (or with sudo).")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # `update` first only when the install fails: the package lists are usually fresh enough.
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"apt-get install {' '.join(PACKAGES)} failed:\n{done.stderr[-2000:]}")
    if not _have_toolchain():
        raise BuildError("go or the govmomi sources are still missing after apt-get install")


def cached_binary() -> Path | None:
    """The binary built from the current main.go, if it is already in the cache."""
    target = binary_path()
    return target if target.is_file() and os.access(target, os.X_OK) else None


def build(*, force: bool = False) -> Path:
    """The path of a vcsim binary built from the current main.go."""
    target = binary_path()
    if cached_binary() is not None and not force:
        return target
    why = missing_toolchain()
    if why:
        raise BuildError(why)
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GOPATH": GOPATH,
        "GO111MODULE": "off",
        "GOCACHE": str(cache_dir() / "go-build"),
    }
    # Build to a temporary name and rename: two test sessions building at once never see half a file.
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            ["go", "build", "-o", tmp, str(MAIN_GO)], env=env, capture_output=True, text=True, cwd=HERE
        )
        if done.returncode != 0:
            raise BuildError(f"go build of {MAIN_GO} failed:\n{done.stderr[-4000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.vcsim.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--install-deps", action="store_true", help="apt-get install the toolchain first (root)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cached binary is current")
    ap.add_argument("--check", action="store_true", help="only say whether a build is possible")
    args = ap.parse_args(argv)
    try:
        if args.install_deps:
            install_deps()
        if args.check:
            why = None if cached_binary() else missing_toolchain()
            if why:
                print(f"vcsim cannot be built: {why}", file=sys.stderr)
                return 1
            print("vcsim: ready to build" if cached_binary() is None else f"vcsim: {cached_binary()}")
            return 0
        print(build(force=args.force))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
