"""The build backend of a source install (``pip install .`` or the sdist): maturin's, after a
check of what a build from source needs, said before anything is fetched or compiled.

A source build needs Rust >= 1.89 (cargo and rustc) and a C compiler and linker (``cc``), which
Rust's build scripts link with. Without them, maturin's hooks would try to download a Rust
toolchain (offline: a long traceback ending in an SSL error) and cargo's own failure comes deep
in a long log ("linker `cc` not found"); this says it first, in one line, with the way around
it: the prebuilt wheel needs neither.

That is why ``pyproject.toml`` requires nothing for the build: maturin itself is asked for by
``get_requires_for_build_*`` once the check has passed, so a machine without Rust (with or
without a network) gets the line before pip installs or downloads anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

RUST = (1, 89)
MATURIN = "maturin>=1.7,<2"


def missing() -> list:
    """What a build from source needs and this machine lacks, in words (empty: nothing)."""
    lacks = []
    compiler = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if compiler is None or (os.path.sep in compiler and not os.path.exists(compiler)):
        lacks.append("no C compiler (cc, gcc or clang)")
    if shutil.which("cargo") is None or shutil.which("rustc") is None:
        lacks.insert(0, "no Rust toolchain (cargo and rustc on PATH; https://rustup.rs installs them)")
    rustc = shutil.which("rustc")
    if rustc is not None:
        try:
            text = subprocess.run([rustc, "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
        found = re.match(r"rustc (\d+)\.(\d+)", text)
        if found and tuple(map(int, found.groups())) < RUST:
            lacks.append(f"{text.strip()} is older than {RUST[0]}.{RUST[1]} (rustup update)")
    return lacks


def check() -> None:
    lacks = missing()
    if lacks:
        sys.stderr.write(
            f"error: building ptychostitch from source needs Rust >= {RUST[0]}.{RUST[1]} and a C compiler "
            f"and linker; here: {'; '.join(lacks)}. The prebuilt wheel needs neither: install the wheel file "
            "(pip install ptychostitch-*-cp39-abi3-manylinux*.whl, Linux x86_64; scripts/build_wheel.sh "
            "makes it where Rust is); once ptychostitch is released on PyPI, pip install ptychostitch "
            "picks a wheel by itself\n"
        )
        raise SystemExit(1)


def _maturin():
    import maturin

    return maturin


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    check()
    return _maturin().build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    check()
    return _maturin().build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return _maturin().build_sdist(sdist_directory, config_settings)


def get_requires_for_build_wheel(config_settings=None):
    check()
    return [MATURIN]


def get_requires_for_build_editable(config_settings=None):
    check()
    return [MATURIN]


def get_requires_for_build_sdist(config_settings=None):
    return [MATURIN]


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    check()
    return _maturin().prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    check()
    return _maturin().prepare_metadata_for_build_editable(metadata_directory, config_settings)
