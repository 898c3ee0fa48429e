"""cluster_paths.py: what a node must see of a local --out/--input for `build --address` (pure parts;
the check on a real multi-node cluster is in test_multinode.py)."""

from __future__ import annotations

from pathlib import Path

from videonet_curate.cluster_paths import directory_fingerprint, mismatches, probe_node


def test_a_directory_fingerprint_is_its_names_and_sizes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "x.mp4").write_bytes(b"123")
        (root / "y.avi").write_bytes(b"12")
    assert directory_fingerprint(a) == directory_fingerprint(b)  # same tree elsewhere: same fingerprint
    (b / "y.avi").write_bytes(b"1234")
    assert directory_fingerprint(a) != directory_fingerprint(b)
    assert directory_fingerprint(tmp_path / "absent") is None


def test_a_node_that_misses_the_marker_or_sees_another_tree_is_named(tmp_path: Path) -> None:
    out, media = tmp_path / "out", tmp_path / "media"
    out.mkdir()
    media.mkdir()
    (media / "v.mp4").write_bytes(b"video")
    marker = out / ".videonet-mount-check-abc"
    marker.write_text("token")
    expected = {"--input": directory_fingerprint(media)}
    here = probe_node(str(marker), {"--input": str(media)})
    assert mismatches("token", expected, here) == []
    marker.unlink()  # a node whose --out is another (local, unshared) directory: no marker there
    (media / "v.mp4").write_bytes(b"another video")
    elsewhere = probe_node(str(marker), {"--input": str(media)})
    assert mismatches("token", expected, elsewhere) == ["--out", "--input"]
