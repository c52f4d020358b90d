"""resolve_inside: the one 'stays inside the dataset root' check."""

from __future__ import annotations

from pathlib import Path

import pytest

from gloper_jobs.exceptions import PathEscapeError, PermanentError
from gloper_jobs.paths import resolve_inside


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "Zebra").mkdir(parents=True)
    (root / "Zebra" / "a.jpg").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"y")
    (root / "Zebra" / "out.jpg").symlink_to(outside / "secret.jpg")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "inlink.jpg").symlink_to(root / "Zebra" / "a.jpg")
    return root


def test_inside_paths_resolve(tree: Path) -> None:
    assert resolve_inside(tree, "Zebra/a.jpg") == (tree / "Zebra" / "a.jpg").resolve()
    assert resolve_inside(tree, "Zebra/../Zebra/a.jpg") == (tree / "Zebra" / "a.jpg").resolve()
    assert resolve_inside(tree, str(tree / "Zebra" / "a.jpg")) == (tree / "Zebra" / "a.jpg").resolve()
    # a symlink that stays inside is followed; a missing file inside is fine (fails when read)
    assert resolve_inside(tree, "inlink.jpg") == (tree / "Zebra" / "a.jpg").resolve()
    assert resolve_inside(tree, "Zebra/missing.jpg") == (tree / "Zebra" / "missing.jpg").resolve()


@pytest.mark.parametrize(("rel", "why"), [
    ("../outside/secret.jpg", "'..' leads out"),
    ("Zebra/../../outside/secret.jpg", "'..' leads out"),
    ("Zebra/out.jpg", "symlink"),
    ("linkdir/secret.jpg", "symlink"),
])
def test_escapes_are_refused_with_the_reason(tree: Path, rel: str, why: str) -> None:
    with pytest.raises(PathEscapeError, match="outside the dataset root") as info:
        resolve_inside(tree, rel)
    assert why in str(info.value)
    assert isinstance(info.value, PermanentError)


def test_absolute_elsewhere_is_refused(tree: Path) -> None:
    with pytest.raises(PathEscapeError, match="an absolute path elsewhere"):
        resolve_inside(tree, str(tree.parent / "outside" / "secret.jpg"))
    with pytest.raises(PathEscapeError):
        resolve_inside(tree, "")


def test_item_inputs_takes_stored_paths_relative_to_the_working_folder(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gloper_jobs.paths import item_inputs

    monkeypatch.chdir(tree.parent)
    photo, label = item_inputs(tree, "root/Zebra/a.jpg", None)
    assert photo == (tree / "Zebra" / "a.jpg").resolve() and label is None
    with pytest.raises(PathEscapeError, match="'..' leads out"):
        item_inputs(tree, "root/../outside/secret.jpg", None)
    with pytest.raises(PathEscapeError, match="symlink"):
        item_inputs(tree, "root/Zebra/a.jpg", "root/Zebra/out.jpg")
