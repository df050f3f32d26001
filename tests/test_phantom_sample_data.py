"""The committed sample_data is exactly what the generator produces (it can never drift)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from islet_imaging.phantom import generate_study

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
# the command documented in sample_data/README.md
RECIPE = {"patients": 2, "visits": 3, "seed": 2024, "size": "sample", "transfer_syntax": "rle"}


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def test_sample_data_regenerates_bit_for_bit(tmp_path):
    committed = _hashes(SAMPLE)
    assert len(committed) > 500
    regenerated = _hashes(generate_study(tmp_path / "sample", **RECIPE))
    assert sorted(regenerated) == sorted(committed)
    changed = [name for name in committed if committed[name] != regenerated[name]]
    assert not changed, f"{len(changed)} files differ, e.g. {changed[:3]}: see sample_data/README"


def test_sample_data_is_small_and_documented():
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 15e6
    readme = (SAMPLE / "README.md").read_text()
    assert "--patients 2 --visits 3 --seed 2024 --size sample --rle" in readme
    manifest = json.loads((SAMPLE / "phantom.json").read_text())
    assert f"islet-imaging {manifest['generator']['version']}" in readme
    # the summary table of the README agrees with the truth files
    for row in re.findall(r"^\| (ISLET-\d+) \| (\w+) +\| (\d) +\| ([\d. /]+)\|", readme, re.M):
        patient, trend, n_deposits, volumes = row
        truths = [
            json.loads((SAMPLE / f"truth/{patient}/V{k}/truth.json").read_text()) for k in range(3)
        ]
        assert {t["patient"]["trend"] for t in truths} == {trend}
        assert {t["graft"]["n_deposits"] for t in truths} == {int(n_deposits)}
        expected = [round(t["graft"]["volume_ml_analytic"], 3) for t in truths]
        assert [float(x) for x in volumes.split("/")] == expected
