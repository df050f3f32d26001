"""The README's Python quickstart runs as written and measures the sample graft correctly."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_readme_quickstart_runs_and_matches_truth(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace('"sample_data/', f'"{REPO_ROOT}/sample_data/')
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)

    assert (tmp_path / "deposits.nii.gz").is_file()
    table = namespace["table"]
    volume = table.query("object == 'graft' and metric == 'volume'")
    assert volume.unit.item() == "mL"
    truth = json.loads((REPO_ROOT / "sample_data/truth/ISLET-001/V0/truth.json").read_text())[
        "graft"
    ]["volume_ml_analytic"]
    assert abs(volume.value.item() / truth - 1) < 0.05
    assert namespace["pet"].meta["units"] == "SUVbw"
