"""The vendored browser libraries: committed files match their pins (offline), licences ship with them,
and a tarball or a file that differs from its pin is refused with the reason."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT
from dashboard import vendor
from dashboard.vendor import PACKAGES, Package, VendorError, extract


def test_the_committed_files_match_the_pins_without_network() -> None:
    done = subprocess.run([sys.executable, "-m", "dashboard.vendor", "--check"], check=False, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "lightweight-charts 5.2.1" in done.stdout and "tabulator-tables 6.5.3" in done.stdout


def test_each_library_ships_with_its_licence() -> None:
    lw = (vendor.VENDOR_DIR / "lightweight-charts" / "LICENSE").read_text()
    tab = (vendor.VENDOR_DIR / "tabulator-tables" / "LICENSE").read_text()
    assert "Apache License" in lw and "Version 2.0" in lw
    assert "MIT License" in tab and "Oli Folkerd" in tab
    assert all(any(m.endswith("/LICENSE") for m in p.files) for p in PACKAGES)


def test_check_names_a_changed_a_missing_and_an_unpinned_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "vendor"
    shutil.copytree(vendor.VENDOR_DIR, copy)
    monkeypatch.setattr(vendor, "VENDOR_DIR", copy)
    assert vendor.check() == []
    (copy / "tabulator-tables" / "tabulator.min.js").write_text("/* edited */")
    (copy / "lightweight-charts" / "LICENSE").unlink()
    (copy / "tabulator-tables" / "extra.js").write_text("")
    problems = vendor.check()
    assert len(problems) == 3
    assert problems[0].startswith("lightweight-charts/LICENSE: missing")
    assert problems[1].startswith("tabulator-tables/tabulator.min.js: sha256 ")
    assert problems[2] == "tabulator-tables/extra.js: not a pinned file"


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_a_tarball_is_taken_only_when_it_and_each_file_match_their_pins() -> None:
    js, licence = b"window.X = 1;", b"MIT"
    tgz = _tarball({"package/dist/x.js": js, "package/LICENSE": licence})
    files = {"package/dist/x.js": hashlib.sha256(js).hexdigest(), "package/LICENSE": hashlib.sha256(licence).hexdigest()}
    pkg = Package("x", "1.0.0", _integrity(tgz), files)
    got = extract(pkg, tgz)
    assert {p.relative_to(vendor.VENDOR_DIR).as_posix(): d for p, d in got.items()} == {"x/x.js": js, "x/LICENSE": licence}

    with pytest.raises(VendorError, match="tarball integrity mismatch"):
        extract(Package("x", "1.0.0", _integrity(b"another tarball"), files), tgz)
    with pytest.raises(VendorError, match="not of the form sha512"):
        extract(Package("x", "1.0.0", "sha1-abc", files), tgz)
    with pytest.raises(VendorError, match="package/dist/x.js has sha256"):
        extract(Package("x", "1.0.0", _integrity(tgz), {**files, "package/dist/x.js": "0" * 64}), tgz)
    with pytest.raises(VendorError, match="package/NOTICE is not a file in the tarball"):
        extract(Package("x", "1.0.0", _integrity(tgz), {**files, "package/NOTICE": "0" * 64}), tgz)
