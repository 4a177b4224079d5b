"""A build log's machine facts (``speechprompt/training/machine.py``): read from /proc/cpuinfo-format text."""

from __future__ import annotations

import shutil

from speechprompt.training.machine import SIMD_FLAGS, machine_facts

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_bf16 xsave

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_bf16 xsave
"""


def test_facts_name_the_cpu_and_its_simd_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    facts = machine_facts(info)
    assert facts["cpu"] == "AMD EPYC 9R14 96-Core Processor" and facts["vendor"] == "AuthenticAMD"
    assert facts["simd"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16"]
    assert set(facts["simd"]) <= set(SIMD_FLAGS)  # "fpu" and "xsave" are not SIMD paths
    if shutil.which("ffmpeg"):
        assert facts["ffmpeg"].startswith("ffmpeg version ")


def test_unreadable_cpuinfo_gives_none_not_an_error(tmp_path):
    facts = machine_facts(tmp_path / "missing")
    assert facts["cpu"] is None and facts["vendor"] is None and facts["simd"] == []
    assert facts["cores"] >= 1
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00model name : x")
    assert machine_facts(tmp_path / "binary")["cpu"] is None


def test_libraries_and_numeric_settings_are_recorded(monkeypatch):
    import numpy
    import soundfile

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.delenv("MKL_CBWR", raising=False)
    facts = machine_facts()
    assert facts["libraries"]["numpy"] == numpy.__version__
    assert facts["libraries"]["libsndfile"] == soundfile.__libsndfile_version__
    assert facts["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and "MKL_CBWR" not in facts["env"]
    assert facts["torch_threads"] >= 1
