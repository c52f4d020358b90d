"""bench.export_scale: a synthesised job exports in every format, RLE-only candidates included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import export_scale


def test_export_scale_exports_every_photo_in_every_format(tmp_path: Path, models_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOPER_MODELS_DIR", str(models_dir))
    out = tmp_path / "export-scale.json"
    report = export_scale.main(["--photos", "23", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    formats = report["formats"]
    assert isinstance(formats, dict)
    for fmt in ("parquet", "coco", "csv"):
        assert formats[fmt]["rows"] == 23, fmt
        assert formats[fmt]["bytes"] > 0, fmt
    assert formats["html_report"]["bytes"] > 0
    # the examples' k-means job writes the chosen mask as a PNG, the other candidate only as its RLE
    assert report["mask_pngs"] == 23
    assert report["machine"]["processor"]  # type: ignore[index]
