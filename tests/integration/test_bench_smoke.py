"""The benchmark harness on a tiny input: it runs end to end and writes well-formed results.

Benchmarks report, they do not assert timings: only that numbers exist and are positive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.harness import Settings
from bench.run import run_benches

pytestmark = pytest.mark.integration


def test_bench_harness_writes_results(
    playground: object, prefect_server: str, tmp_path: Path
) -> None:
    settings = Settings(
        work=tmp_path / "work", quick=True, reps=1, warmup=0, sizes_mb=(2,),
        b2_cases=("small",), b3_loops=1000, b4_work=1000,
        benches=("b1", "b2", "b3", "b4", "b5"),
    )
    settings.work.mkdir()
    results = run_benches(
        settings, base=playground.base, registry=playground.address,  # type: ignore[attr-defined]
        with_prefect=False,
    )
    paths = report.write_all(tmp_path / "results", results)

    data = json.loads(paths["json"].read_text())
    assert {"machine", "settings", "b1", "b2", "b3", "b4", "b5"} <= data.keys()
    assert data["machine"]["cores"] > 0
    assert "buildah" in data["machine"]["buildah"]
    size = data["b1"]["sizes"][0]
    for variant in ("original", "ours"):
        for key in ("export_s", "publish_s", "shared_bytes", "registry_bytes"):
            assert size[variant][key]["median"] > 0, (variant, key)
    assert size["ours"]["compressed_bytes"] > 0
    assert all(value > 0 for value in size["ratio_original_over_ours"].values())
    for key in ("export_s", "publish_s", "total_s", "registry_bytes"):
        assert size["registry"][key]["median"] > 0, ("registry", key)
    assert size["registry"]["shared_bytes"]["median"] == 0  # no shared directory at all
    for case in data["b2"]["cases"]:
        assert case["flow_s"]["median"] > 0 and case["bare_s"]["median"] > 0
        assert case["ratio_flow_over_bare"] > 0
    assert data["b2"]["noop_flow_s"]["median"] > 0
    assert data["b3"]["native_amd64_s"]["median"] > 0
    assert data["b3"]["ratio_emulated_over_native"] > 0
    assert [a["platform"] for a in data["b4"]["arches"]] == ["linux/amd64", "linux/arm64"]
    for arch in data["b4"]["arches"]:
        assert arch["cold_s"]["median"] > 0 and arch["warm_s"]["median"] > 0
        assert arch["run_layer_reused"] == arch["runs"] == 1, "the warm build used the cache"
    b5 = data["b5"]
    assert b5["platforms"] == ["linux/amd64", "linux/arm64"]
    for mode in ("plain", "attest", "signed"):
        assert b5["modes"][mode]["publish_s"]["median"] > 0, mode
    for mode in ("attest", "signed"):
        m = b5["modes"][mode]
        assert m["extra_per_platform_s"] > 0, f"{mode}: the SBOM alone takes seconds"
        assert sorted(m["sbom_s"]) == ["linux/amd64", "linux/arm64"]
        for kind in ("sbom", "provenance"):
            assert sorted(m["sizes"][kind]) == ["linux/amd64", "linux/arm64"]
            assert all(size > 0 for size in m["sizes"][kind].values()), (mode, kind)
    assert b5["modes"]["attest"]["sizes"]["signature"]["count"] == 0
    signatures = b5["modes"]["signed"]["sizes"]["signature"]
    assert signatures["count"] == 7, "the index, 2 platforms and 4 attestations are signed"
    assert signatures["bytes_total"] > 0
    assert b5["ratio_signed_over_plain"] > 0

    markdown = paths["md"].read_text()
    for heading in ("## B1", "## B2", "## B3", "## B4", "## B5", "original/ours",
                    "original/registry", "flow/bare", "emulated/native", "cold/warm",
                    "signed/plain"):
        assert heading in markdown
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "work").glob("b*/store-*")), "scratch stores were left behind"
    assert not (tmp_path / "work" / "b5").exists(), "B5's layouts and key were left behind"
