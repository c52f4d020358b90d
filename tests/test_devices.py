"""The CPU a result or a timing names: the first processor's /proc/cpuinfo fields."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench
from gloper_jobs import devices

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: another
"""


def test_cpu_info_reads_the_first_processor(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = devices.cpu_info(path)
    assert info["vendor_id"] == "AuthenticAMD"
    assert (info["cpu family"], info["model"], info["model name"]) == ("25", "17", "AMD EPYC")
    assert info["flags"].split() == ["fpu", "sse2", "avx2", "avx512f"]
    assert devices.cpu_info(tmp_path / "missing") == {}


def test_benches_name_the_cpu_by_vendor_family_and_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    monkeypatch.setattr(bench, "cpu_info", lambda: devices.cpu_info(path))
    assert bench.processor() == "AMD EPYC (AuthenticAMD family 25 model 17)"
    assert bench.machine()["processor"] == bench.processor()
