"""Build lab/vcsim/main.go against Debian's govmomi and cache the binary by the hash of main.go.

    python -m lab.vcsim.build          # prints the binary's path

Installs golang-go and golang-github-vmware-govmomi-dev with apt-get when they are missing (as
root only; otherwise it says what to install). The binary lands in
~/.cache/dsm-lab/vcsim-<sha256 of main.go, 16 hex> (or $DSM_LAB_CACHE), so a changed main.go is
rebuilt and an unchanged one never is.
"""

from __future__ import annotations

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


def ensure_packages() -> None:
    if _have_toolchain():
        return
    if os.geteuid() != 0:
        raise BuildError(
            f"vcsim needs the Debian packages {' '.join(PACKAGES)}: install them as root (apt-get)."
        )
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


def build(*, force: bool = False) -> Path:
    """The path of a vcsim binary built from the current main.go."""
    target = binary_path()
    if target.is_file() and os.access(target, os.X_OK) and not force:
        return target
    ensure_packages()
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


def main() -> int:
    try:
        print(build(force="--force" in sys.argv[1:]))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
