"""Safe writing: all or nothing, no unasked overwrite, clean failure in a read-only folder."""

import pytest

from medviewer.core.safe import ExistsError, ExportError, write_bytes, write_files, write_folder


def test_group_lands_whole(tmp_path):
    written = write_files({tmp_path / "a.txt": lambda fp: fp.write(b"a"), tmp_path / "sub" / "b.txt":
                           lambda fp: fp.write(b"b")})
    assert [p.read_bytes() for p in written] == [b"a", b"b"]


def test_failure_leaves_nothing(tmp_path):
    def broken(fp):
        fp.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(ExportError, match="No space left"):
        write_files({tmp_path / "a.txt": lambda fp: fp.write(b"a"), tmp_path / "b.txt": broken})
    assert list(tmp_path.iterdir()) == []


def test_existing_file_kept_unless_forced(tmp_path):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"old")
    with pytest.raises(ExistsError, match="report.pdf: already exists"):
        write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    write_bytes(target, b"new", force=True)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.pdf"]


def test_readonly_folder_fails_cleanly(readonly_dir):
    with pytest.raises(ExportError, match="readonly"):
        write_bytes(readonly_dir / "report.pdf", b"x")
    with pytest.raises(ExportError, match="readonly"):
        write_folder(readonly_dir / "anon", lambda staging: (staging / "f").write_bytes(b"x"))
    assert list(readonly_dir.iterdir()) == []


def test_folder_replaced_only_after_success(tmp_path):
    target = tmp_path / "anon"
    target.mkdir()
    (target / "old").write_text("old")

    def broken(staging):
        (staging / "new").write_text("new")
        raise OSError(5, "Input/output error")

    with pytest.raises(ExistsError):
        write_folder(target, broken)
    with pytest.raises(ExportError, match="Input/output"):
        write_folder(target, broken, force=True)
    assert [p.name for p in target.iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anon"]
    write_folder(target, lambda staging: (staging / "new").write_text("new"), force=True)
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anon"]
