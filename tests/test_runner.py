"""The evaluation over a dataset: true labels from wnid folders, mosaics, records written as
it goes, resume after a kill, refusal to mix runs, and the same numbers under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("captum")

from helpers import tiny_loaded  # noqa: E402

from pullbacks import sources  # noqa: E402
from pullbacks.evaluation import data, runner  # noqa: E402
from pullbacks.evaluation.methods import Settings  # noqa: E402
from pullbacks.images import builtin_photos  # noqa: E402

WNIDS = {285: "n02124075", 967: "n07920052", 657: "n03773504", 665: "n03785016"}  # the four built-in photos' classes


def _save(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(path)


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory):
    """The built-in photos in ImageNet layout, two per class (the second mirrored)."""
    root = tmp_path_factory.mktemp("imagenet")
    for p in builtin_photos():
        _save(p.image, root / WNIDS[p.label] / f"{p.name}.png")
        _save(p.image.flip(-1), root / WNIDS[p.label] / f"{p.name}_mirror.png")
    return root


def _loaded():
    return tiny_loaded("tiny", 0.3)


FAST = Settings(
    ig_steps=2, smoothgrad_samples=2, blocks=2, infidelity_draws=1, mc_samples=2, ms_samples=2, batch_size=3
)


def test_true_labels_come_from_the_wnid_folders(imagenet_folder):
    items = sources.folder_items(imagenet_folder)
    assert len(items) == 8 and {it.label for it in items} == set(WNIDS)
    assert all(WNIDS[it.label] == it.name.split("/")[0] for it in items)
    assert sources.imagenet_wnids()[285] == "n02124075"
    (imagenet_folder / "not_a_wnid").mkdir()
    _save(builtin_photos()[0].image, imagenet_folder / "not_a_wnid" / "x.png")
    try:
        with pytest.raises(ValueError, match="'not_a_wnid' is not an ImageNet wnid"):
            sources.folder_items(imagenet_folder)
    finally:
        shutil.rmtree(imagenet_folder / "not_a_wnid")


def test_selection_is_seeded_and_shards_cover_everything_once(imagenet_folder):
    items = sources.folder_items(imagenet_folder)
    a, b = data.select(items, 5, 314), data.select(items, 5, 314)
    assert [i.name for i in a] == [i.name for i in b] and len(a) == 5
    assert [i.name for i in data.select(items, 5, 1)] != [i.name for i in a]
    parts = [data.shard(items, r, 3) for r in range(3)]
    assert sorted(i.name for p in parts for i in p) == sorted(i.name for i in items)


def test_limit_picks_the_images_the_follow_ups_loader_draws_first(tmp_path):
    """Numbered images in wnid folders: ``select`` keeps what a torchvision ``ImageFolder`` under
    ``DataLoader(shuffle=True, batch_size=20)`` with a generator seeded 314 yields first."""
    torchvision = pytest.importorskip("torchvision")
    from torch.utils.data import DataLoader

    tiny = Image.new("RGB", (4, 4))
    for k in range(57):  # classes of uneven size, names whose string and numeric orders differ
        wnid = sorted(WNIDS.values())[k % 3]
        path = tmp_path / wnid / f"{k}.png"
        path.parent.mkdir(exist_ok=True)
        tiny.save(path)
    folder = torchvision.datasets.ImageFolder(str(tmp_path))
    paths = [Path(p).relative_to(tmp_path).as_posix() for p, _ in folder.samples]
    loader = DataLoader(range(len(folder)), batch_size=20, shuffle=True, generator=torch.Generator().manual_seed(314))
    theirs = [paths[i] for batch in loader for i in batch.tolist()][:45]
    items = sources.folder_items(tmp_path)
    assert [it.name for it in items] == paths  # the same order before the shuffle
    assert [it.name for it in data.select(items, 45)] == theirs
    assert [it.name for it in data.select(items, 3)] == theirs[:3]
    assert [it.name for it in data.select(items, 45)] != paths[:45]


@pytest.mark.slow  # over 2 s
def test_mosaics_follow_the_follow_ups_rule_and_focus_counts_the_target_tiles(imagenet_folder):
    items = sources.folder_items(imagenet_folder)
    made = runner.mosaics(items, 12, seed=3)
    assert made == runner.mosaics(items, 12, seed=3) and made != runner.mosaics(items, 12, seed=4)
    labels = {it.name: it.label for it in items}
    images = {it.name: data.Images([it])[0][0] for it in items}
    distinct_others = 0
    for m in made:
        targets = [t for t, is_target in zip(m.tiles, m.target) if is_target]
        others = [t for t, is_target in zip(m.tiles, m.target) if not is_target]
        assert len(targets) == 2 and targets[0] == targets[1] and labels[targets[0]] == m.label  # one image, twice
        assert all(labels[o] != m.label for o in others)  # distractors of other classes
        distinct_others += labels[others[0]] != labels[others[1]]
        x = runner.mosaic_image(m, images)
        quadrants = [x[:, :112, :112], x[:, :112, 112:], x[:, 112:, :112], x[:, 112:, 112:]]
        for q, name in zip(quadrants, m.tiles):  # bilinear, antialiased: PIL's BILINEAR resize, channel by channel
            pil = [
                np.asarray(Image.fromarray(c.numpy(), mode="F").resize((112, 112), Image.BILINEAR))
                for c in images[name]
            ]
            torch.testing.assert_close(q, torch.from_numpy(np.stack(pil)), atol=1e-5, rtol=0)
        relevance = torch.zeros(1, 3, 224, 224)  # x ⊙ a positive exactly on the target tiles: Focus 1
        for q, t in zip(((0, 0), (0, 112), (112, 0), (112, 112)), m.target):
            if t:
                relevance[:, :, q[0] : q[0] + 112, q[1] : q[1] + 112] = x[:, q[0] : q[0] + 112, q[1] : q[1] + 112]
        from pullbacks.evaluation.suite import focus

        assert focus({"m": relevance}, [m.target], x[None])["m"][0] == pytest.approx(1.0, abs=1e-9)
    assert 0 < distinct_others < len(made)  # the classes of the other two are drawn with replacement


def _records(out: Path) -> dict:
    rows = runner.read_records(out / runner.RECORDS)
    keys = [(r["image"], r["method"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))  # each (image, method, metric) once
    return {k: r["value"] for k, r in zip(keys, rows)}


def _run(out, items, **kw):
    return runner.run(
        _loaded(),
        items,
        methods=["pullback", "gradient"],
        metrics=kw.pop("metrics", ["faithfulness_estimate", "randomisation", "focus"]),
        settings=FAST,
        out=out,
        spec=kw.pop("spec", {"test": 1}),
        mosaic_count=2,
        progress=False,
        **kw,
    )


@pytest.mark.slow  # over 2 s
def test_a_killed_run_resumes_with_every_record_once_and_the_same_numbers(imagenet_folder, tmp_path, monkeypatch):
    items = sources.folder_items(imagenet_folder)
    whole = _run(tmp_path / "whole", items)
    assert whole is not None and set(whole.scores["focus"]) == {"pullback", "gradient"}
    writes = []
    real = runner._append

    def killed_after_first_batch(path, records):
        real(path, records)
        writes.append(len(records))
        if len(writes) == 1:
            raise KeyboardInterrupt  # as if killed with the first batch on disk

    monkeypatch.setattr(runner, "_append", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "again", items)
    first = (tmp_path / "again" / "records" / "rank-0.jsonl").read_text().splitlines()
    assert len(first) == writes[0] > 0 and not (tmp_path / "again" / runner.RECORDS).exists()
    monkeypatch.setattr(runner, "_append", real)
    _run(tmp_path / "again", items)
    assert _records(tmp_path / "again") == _records(tmp_path / "whole")
    written = (tmp_path / "again" / "records" / "rank-0.jsonl").read_text().splitlines()
    assert len(written) == len(_records(tmp_path / "again"))  # what was done was skipped, not redone
    assert len(_records(tmp_path / "whole")) == 8 * 2 * (1 + 2 + 3) + 2 * 2  # images×methods×columns + mosaics


@pytest.mark.slow  # over 2 s
def test_the_numbers_do_not_depend_on_the_batch_or_the_order(imagenet_folder, tmp_path):
    items = sources.folder_items(imagenet_folder)
    a = _run(tmp_path / "a", items, metrics=["faithfulness_estimate", "monotonicity_correlation"])
    global FAST
    saved, FAST = FAST, Settings(**{**FAST.__dict__, "batch_size": 5})
    try:
        b = _run(tmp_path / "b", items[::-1], metrics=["faithfulness_estimate", "monotonicity_correlation"])
    finally:
        FAST = saved
    assert a is not None and b is not None
    ra, rb = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert ra == rb


def test_other_settings_in_the_same_folder_are_refused(imagenet_folder, tmp_path):
    items = sources.folder_items(imagenet_folder)[:2]
    _run(tmp_path / "o", items, metrics=["faithfulness_estimate"], spec={"methods": ["a"]})
    with pytest.raises(ValueError, match=r"holds the records of another run \(methods: \['a'\] there, \['b'\] now\)"):
        _run(tmp_path / "o", items, metrics=["faithfulness_estimate"], spec={"methods": ["b"]})


def test_default_output_is_ignored_by_git():
    from pullbacks.apps.cli import build_parser

    args = build_parser().parse_args(["evaluate"])
    root = Path(__file__).resolve().parents[1]
    assert args.out.startswith("out/") and "/out/" in (root / ".gitignore").read_text().splitlines()


@pytest.mark.slow
def test_torchrun_with_two_processes_gives_the_numbers_of_one(imagenet_folder, tmp_path):
    """gloo on CPU: the same per-image records as one process."""
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("no torchrun")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    common = [
        "-m",
        "pullbacks",
        "evaluate",
        "--model",
        "efficientnet_lite0",
        "--images",
        str(imagenet_folder),
        "--methods",
        "gradient",
        "pullback",
        "--metrics",
        "faithfulness_estimate",
        "--limit",
        "4",
        "--no-progress",
        "--batch-size",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=900
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", *common, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert two.returncode == 0, two.stderr
    assert sorted(p.name for p in (tmp_path / "two" / "records").iterdir()) == ["rank-0.jsonl", "rank-1.jsonl"]
    r1, r2 = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert r1.keys() == r2.keys() and len(r1) == 4 * 2
    np.testing.assert_allclose([r1[k] for k in sorted(r1)], [r2[k] for k in sorted(r1)], rtol=1e-6)
    assert "| Vanilla gradient |" in two.stdout and "Faithfulness est." in two.stdout


def test_a_refused_run_writes_nothing(imagenet_folder, tmp_path):
    one_class = [
        it for it in sources.folder_items(imagenet_folder) if it.label == sources.folder_items(imagenet_folder)[0].label
    ]
    with pytest.raises(ValueError, match="at least 2 classes"):
        _run(tmp_path / "none", one_class, metrics=["focus"])
    assert not (tmp_path / "none").exists()  # no run.json that the next, corrected run would be refused by


@pytest.mark.slow  # over 2 s
def test_a_torn_last_line_is_cut_off_and_its_records_computed_again(imagenet_folder, tmp_path):
    items = sources.folder_items(imagenet_folder)[:3]
    whole = tmp_path / "whole"
    _run(whole, items, metrics=["faithfulness_estimate"])
    torn = tmp_path / "torn"
    _run(torn, items, metrics=["faithfulness_estimate"])
    path = torn / "records" / "rank-0.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-line
    (torn / runner.RECORDS).unlink()
    with pytest.warns(UserWarning, match="cut off a torn last line"):
        _run(torn, items, metrics=["faithfulness_estimate"])
    assert _records(torn) == _records(whole)  # no record lost, none doubled
    assert all(json.loads(line) for line in path.read_text().splitlines())  # whole lines only


@pytest.mark.slow  # over 2 s
def test_a_second_run_on_the_same_folder_is_refused_while_the_first_holds_it(imagenet_folder, tmp_path):
    items = sources.folder_items(imagenet_folder)[:2]
    out = tmp_path / "o"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from pullbacks.evaluation import runner\n"
                f"with runner._lock(Path({str(out)!r}) / '.lock-rank-0'):\n"
                "    print('locked', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out.mkdir()
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            runner.OutputError, match=rf"another run \(pid {holder.pid}\) is writing to .*another --out"
        ):
            _run(out, items, metrics=["faithfulness_estimate"])
        assert not (out / "records").exists()
    finally:
        holder.kill()
        holder.wait()
    _run(out, items, metrics=["faithfulness_estimate"])  # the lock died with its holder
    assert len(_records(out)) == 2 * 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "code, fix", [(28, "free some disk space"), (30, "read-only: pass another --out"), (13, "make it writable")]
)
def test_io_errors_are_one_line_with_the_path_and_the_fix_and_keep_finished_records(
    imagenet_folder, tmp_path, monkeypatch, capsys, code, fix
):
    from pullbacks.apps.cli import main

    out = tmp_path / "o"
    real, calls = runner._append, []

    def fails_second_time(path, records):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code), str(path))
        real(path, records)

    monkeypatch.setattr(runner, "_append", fails_second_time)
    argv = [
        "evaluate",
        "--model",
        "efficientnet_lite0",
        "--images",
        str(imagenet_folder),
        "--limit",
        "4",
        "--methods",
        "gradient",
        "--metrics",
        "faithfulness_estimate",
        "--batch-size",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"cannot write {out / 'records' / 'rank-0.jsonl'}" in err and fix in err
    kept = (out / "records" / "rank-0.jsonl").read_text().splitlines()
    assert len(kept) == 2  # the first batch survives
    monkeypatch.setattr(runner, "_append", real)
    assert main(argv) == 0
    assert len(_records(out)) == 4


@pytest.mark.slow
def test_a_corrupt_image_in_a_worker_gives_the_message_without_workers(imagenet_folder, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(imagenet_folder, root)
    (root / WNIDS[285] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    messages = []
    for workers in ("0", "1"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pullbacks",
                "evaluate",
                "--model",
                "efficientnet_lite0",
                "--images",
                str(root),
                "--methods",
                "gradient",
                "--metrics",
                "faithfulness_estimate",
                "--no-progress",
                "--workers",
                workers,
                "--out",
                str(tmp_path / f"o{workers}"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 2
        messages.append(proc.stderr.strip())
    assert messages[0] == messages[1] and "broken.jpg" in messages[0] and len(messages[1].splitlines()) == 1
    assert "Traceback" not in messages[1] and "worker" not in messages[1] and len(messages[1]) < 400


@pytest.mark.slow
def test_under_torchrun_an_error_on_one_rank_stops_every_rank(imagenet_folder, tmp_path):
    import time

    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("no torchrun")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    root = tmp_path / "images"
    shutil.copytree(imagenet_folder, root)
    names = [it.name for it in sources.folder_items(root)]
    (root / names[1]).write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # rank 1's first image (every 2nd from 1)
    start = time.monotonic()
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "pullbacks",
            "evaluate",
            "--model",
            "efficientnet_lite0",
            "--images",
            str(root),
            "--methods",
            "gradient",
            "--metrics",
            "faithfulness_estimate",
            "--no-progress",
            "--batch-size",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode != 0
    assert "cannot load image" in proc.stderr and Path(names[1]).name in proc.stderr
    assert time.monotonic() - start < 300  # no rank left waiting at a barrier (gloo's default timeout: 30 min)


def test_a_packed_partial_run_resumes_to_the_same_records(imagenet_folder, tmp_path, monkeypatch):
    """pack() compresses a stopped run's rank files (what is committed); the same command then
    resumes from them, computing only what is missing, to the records of an unbroken run."""
    items = sources.folder_items(imagenet_folder)[:3]
    _run(tmp_path / "whole", items, metrics=["faithfulness_estimate"])
    real, writes = runner._append, []

    def killed_after_first_batch(path, records):
        real(path, records)
        writes.append(len(records))
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_append", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "part", items, metrics=["faithfulness_estimate"])
    monkeypatch.setattr(runner, "_append", real)
    (packed,) = runner.pack(tmp_path / "part")
    assert packed.name == "rank-0.jsonl.gz" and not (tmp_path / "part" / "records" / "rank-0.jsonl").exists()
    assert len(runner.read_lines(packed)) == writes[0]
    again = packed.read_bytes()
    runner.pack(tmp_path / "part")
    assert packed.read_bytes() == again  # byte for byte: no time stamp
    _run(tmp_path / "part", items, metrics=["faithfulness_estimate"])
    assert _records(tmp_path / "part") == _records(tmp_path / "whole")
