"""Write each built-in task's data manifest (plugins/<task>/data_manifest.json) from a data folder.

    python scripts/make_data_manifests.py [../shared/data]

Every file under ``<data>/<task>/`` is listed with its size and sha256; its pinned upstream source
is NetLLM at the commit the folder was extracted from (see ../shared/data/README.md), except the
files converted here (derived), which only a mirror of the folder can provide.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = {"repo": "duowuyms/NetLLM", "commit": "105bcf070f2bec808f7b14f8f5a953de6e4e6e54",
            "url": "https://raw.githubusercontent.com/duowuyms/NetLLM/{commit}/{path}", "license": "MIT"}
DATASETS = {
    "abr": {"origins": {"traces/train/": "adaptive_bitrate_streaming/data/traces/train/",
                        "traces/valid/": "adaptive_bitrate_streaming/data/traces/valid/",
                        "traces/test/": "adaptive_bitrate_streaming/data/traces/test/",
                        "video/": "adaptive_bitrate_streaming/data/videos/"},
            "derived": {"traces/meta/": "converted from NetLLM's mahimahi_ptrs.pkl / computed here (JSON)"}},
    "cjs": {"origins": {"tpch/": "cluster_job_scheduling/data/tpch/"},
            "derived": {"tpch_json/": "the TPC-H jobs of tpch/ converted to pickle-free JSON"}},
    "vp": {"origins": {"Jin2022/": "viewport_prediction/data/viewports/Jin2022/"}, "derived": {}},
}


def manifest(folder: Path, name: str, spec: dict) -> dict:
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not any(rel.startswith(prefix) for prefix in [*spec["origins"], *spec["derived"]]):
            raise SystemExit(f"{path}: under no known origin; add its folder to DATASETS")
        files.append([rel, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()])
    return {"format": 1, "dataset": name, "folder": name, "upstream": UPSTREAM, **spec, "files": files}


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
    for name, spec in DATASETS.items():
        out = ROOT / "plugins" / name / "data_manifest.json"
        m = manifest(data / name, name, spec)
        out.write_text(json.dumps(m, indent=0, separators=(",", ":")) + "\n")
        print(f"{out}: {len(m['files'])} files, {sum(f[1] for f in m['files']) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
