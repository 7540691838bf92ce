"""The browser libraries the dashboard serves from ``static/vendor/``, pinned and verified.

They are committed, so a page needs no network at run time. This module
fetches each pinned package's tarball from the npm registry, checks it against
the sha512 integrity string npm publishes for that version, and copies the
built browser files and licence into ``static/vendor/<package>/``. Each copied
file is pinned by its sha256 as well, so ``--check`` can verify the committed
files offline.

    python -m dashboard.vendor            # fetch, verify, write static/vendor/
    python -m dashboard.vendor --check    # no network: the committed files match the pins

lightweight-charts 5.2.1 ships no NOTICE file (its LICENSE is the whole
Apache-2.0 text). The minified files keep their ``sourceMappingURL`` comments;
the maps are not vendored (a browser asks for them only with its developer
tools open).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

VENDOR_DIR = Path(__file__).parent / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    """One npm package: its pinned version, tarball integrity, and the files taken from it (tar member -> sha256)."""

    name: str
    version: str
    integrity: str  # npm's "sha512-<base64>" of the tarball
    files: dict[str, str]

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name}-{self.version}.tgz"

    def target(self, member: str) -> Path:
        return VENDOR_DIR / self.name / Path(member).name


PACKAGES = (
    Package(
        "lightweight-charts",
        "5.2.1",
        "sha512-IVwoK1RLFiLPubaKIjNbtjWLnpPMqiABSrTay6whmNa8L1+19292VtHJ+BWyPUuLCwF0tcQlhEWd1CLB2a1nsQ==",
        {
            "package/dist/lightweight-charts.standalone.production.js":
                "e21cc5caa0226ef30bd8549c50b9ef926615f2a4ee6b4e486353477a55f598cf",
            "package/LICENSE": "70c9d5382506dd184465425c08a99ad9bd6d9ac1313c252968ba0b585e5ef823",
        },
    ),
    Package(
        "tabulator-tables",
        "6.5.3",
        "sha512-nJ2QaqZzQvd9B4rf4LBnRxfb6sSqA/BX2OsXnSJ2d8k21oXDSTtFtOUrDap04a/6BDGivC/MByCxy43ugadJIg==",
        {
            "package/dist/js/tabulator.min.js": "ffac518cb793c672a2f0522b7fc80bf862234d96bb1e581c8aaf7f48f130eafa",
            # The "simple" theme: light, thin borders, dense rows.
            "package/dist/css/tabulator_simple.min.css":
                "edef8839235a4b6a8c3dc391ec93f2ce1bc633dd5270a5f990753b6f9183d32b",
            "package/LICENSE": "191a2ee554684e1064c897b432f0e1bc6dfa714ca045d3f6ea2cf692cbd398b7",
        },
    ),
)


class VendorError(Exception):
    """A package could not be fetched or did not match its pins; the message says which and why."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_integrity(data: bytes, integrity: str) -> None:
    """Raise unless ``data`` matches an npm ``sha512-<base64>`` integrity string."""
    algo, _, expected = integrity.partition("-")
    if algo != "sha512" or not expected:
        raise VendorError(f"integrity string {integrity!r} is not of the form sha512-<base64>")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != expected:
        raise VendorError(f"tarball integrity mismatch: pinned sha512-{expected}, got sha512-{got}")


def extract(pkg: Package, tarball: bytes) -> dict[Path, bytes]:
    """The pinned files of a verified tarball, each checked against its sha256, keyed by where it goes."""
    verify_integrity(tarball, pkg.integrity)
    out: dict[Path, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for member, digest in pkg.files.items():
            try:
                handle = tar.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise VendorError(f"{pkg.name} {pkg.version}: {member} is not a file in the tarball")
            data = handle.read()
            if _sha256(data) != digest:
                raise VendorError(f"{pkg.name} {pkg.version}: {member} has sha256 {_sha256(data)}, pinned {digest}")
            out[pkg.target(member)] = data
    return out


def fetch(pkg: Package, timeout_s: float = 60.0) -> bytes:
    """The package's tarball from the npm registry."""
    try:
        with urllib.request.urlopen(pkg.url, timeout=timeout_s) as resp:
            return resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise VendorError(f"cannot fetch {pkg.url}: {exc}") from exc


def check() -> list[str]:
    """What differs between ``static/vendor/`` and the pins (empty when everything matches): no network."""
    problems: list[str] = []
    expected: set[Path] = set()
    for pkg in PACKAGES:
        for member, digest in pkg.files.items():
            path = pkg.target(member)
            expected.add(path)
            rel = path.relative_to(VENDOR_DIR)
            if not path.is_file():
                problems.append(f"{rel}: missing (run python -m dashboard.vendor)")
            elif (got := _sha256(path.read_bytes())) != digest:
                problems.append(f"{rel}: sha256 {got}, pinned {digest} ({pkg.name} {pkg.version})")
    if VENDOR_DIR.is_dir():
        for path in sorted(p for p in VENDOR_DIR.rglob("*") if p.is_file()):
            if path not in expected:
                problems.append(f"{path.relative_to(VENDOR_DIR)}: not a pinned file")
    return problems


def install() -> list[Path]:
    """Fetch, verify and write every pinned package's files; returns the paths written."""
    written: list[Path] = []
    for pkg in PACKAGES:
        for path, data in extract(pkg, fetch(pkg)).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.vendor", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed files against the pins, offline")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"static/vendor matches the pins: {', '.join(f'{p.name} {p.version}' for p in PACKAGES)}")
        return 1 if problems else 0
    try:
        written = install()
    except VendorError as exc:
        print(f"vendor: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path.relative_to(VENDOR_DIR.parent)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
