"""The download engine's small parts on their own: ordered hashing, part plans, saved state, event fan-out."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import mmap
import os
import random

import pytest

from model_manager.core.errors import InvalidFileError
from model_manager.core.models import DownloadState, DownloadStatus
from model_manager.core.services.downloads.digest import OrderedSha256
from model_manager.core.services.downloads.events import StatusBroadcaster
from model_manager.core.services.downloads.filenames import check_repo_filename, library_name
from model_manager.core.services.downloads.job import SpeedMeter
from model_manager.core.services.downloads.partial import Part, PartialFile, download_folder
from model_manager.core.services.downloads.scheduling import MIB, PartScheduler, plan_parts


def _write_out_of_order(path, data: bytes, pieces: list[tuple[int, int]], digest: OrderedSha256 | None) -> None:
    with open(path, "r+b" if path.exists() else "w+b") as file:
        for start, end in pieces:
            os.pwrite(file.fileno(), data[start:end], start)
            if digest is not None:
                digest.written(start, data[start:end])


def test_the_hash_of_bytes_written_out_of_order_is_the_file_hash(tmp_path):
    data = os.urandom(3_000_000)
    path = tmp_path / "file.part"
    path.touch()
    pieces = [(start, min(start + 65_536, len(data))) for start in range(0, len(data), 65_536)]
    random.Random(7).shuffle(pieces)
    digest = OrderedSha256(path)
    _write_out_of_order(path, data, pieces, digest)
    assert digest.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_a_resumed_file_hashes_its_existing_bytes_once_then_the_new_ones(tmp_path):
    data = os.urandom(1_000_000)
    path = tmp_path / "file.part"
    _write_out_of_order(path, data, [(0, 400_000), (600_000, 700_000)], None)
    digest = OrderedSha256(path, already_written=[(0, 400_000), (600_000, 700_000)])
    _write_out_of_order(path, data, [(400_000, 600_000), (700_000, 1_000_000)], digest)
    assert digest.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_a_hash_with_a_gap_does_not_finish(tmp_path):
    path = tmp_path / "file.part"
    path.touch()
    data = os.urandom(100_000)
    digest = OrderedSha256(path)
    digest.written(50_000, data[50_000:])
    with pytest.raises(RuntimeError, match="never written"):
        digest.finish(len(data))


def test_bytes_counted_but_missing_from_the_file_fail_the_hash_and_do_not_crash(tmp_path):
    """Written bytes are hashed from mapped pages: past the end of the file that would be SIGBUS."""
    path = tmp_path / "file.part"
    data = os.urandom(1_000_000)
    path.write_bytes(data)
    digest = OrderedSha256(path, already_written=[(0, 2_000_000)])  # a state that claims more
    with pytest.raises(RuntimeError, match="ends at 1000000, before 2000000"):
        digest.finish(2_000_000)


def test_a_file_that_cannot_be_mapped_is_read_back_instead(tmp_path, monkeypatch):
    def no_mmap(*args, **kwargs):
        raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    data = os.urandom(2_000_000)
    path = tmp_path / "file.part"
    path.touch()
    digest = OrderedSha256(path)
    _write_out_of_order(path, data, [(1_000_000, 2_000_000), (0, 1_000_000)], digest)
    assert digest.finish(len(data)) == hashlib.sha256(data).hexdigest()


def test_an_aborted_hash_lets_go_of_the_file_before_it_may_be_cut(tmp_path):
    path = tmp_path / "file.part"
    data = os.urandom(3_000_000)
    path.write_bytes(data)
    digest = OrderedSha256(path, already_written=[(0, len(data))])
    digest.abort_and_wait()
    assert not digest._thread.is_alive()
    os.truncate(path, 0)  # what a restart from scratch does next


def test_small_files_are_one_part_and_large_ones_many_contiguous_parts():
    assert plan_parts(10 * MIB, 8, 64 * MIB, MIB) == [Part(0, 10 * MIB)]
    assert plan_parts(None, 8, 64 * MIB, MIB) == [Part(0, None)]
    size = 1_000_000_007
    parts = plan_parts(size, 8, 64 * MIB, MIB)
    assert len(parts) >= 8 and parts[0].offset == 0
    assert all(a.end == b.offset for a, b in zip(parts, parts[1:])) and parts[-1].end == size
    assert all(part.size >= MIB for part in parts[:-1])


def test_planned_parts_are_big_enough_that_requests_cost_little():
    """Each part is a request: a 253 MB file is 16 parts of 16 MiB, not 64 of 3.8 MB."""
    parts = plan_parts(253_000_000, 8, 64 * MIB, MIB)
    assert len(parts) == 16 and {p.size for p in parts[:-1]} == {16 * MIB}
    assert len(plan_parts(1024 * MIB, 8, 64 * MIB, MIB)) == 64
    # A file only a little above the threshold still gives every connection a part.
    assert len(plan_parts(6_000_000, 4, 2_000_000, MIB)) == 4


def test_parts_go_out_in_order_then_the_biggest_one_in_flight_is_split():
    scheduler = PartScheduler([Part(0, 8 * MIB), Part(8 * MIB, 8 * MIB)], max_connections=4, min_part_bytes=MIB)
    first = scheduler.next_part()
    first.busy = True
    second = scheduler.next_part()
    assert (first.offset, second.offset) == (0, 8 * MIB)
    second.busy, second.received = True, 2 * MIB
    half = scheduler.next_part()
    assert (half.offset, half.size) == (4 * MIB, 4 * MIB) and first.size == 4 * MIB


def test_connections_double_while_they_pay_off_and_fall_back_when_they_do_not():
    scheduler = PartScheduler([Part(0, 100 * MIB)], max_connections=8, min_part_bytes=MIB)
    now, received = 0.0, 0
    assert scheduler.observe(now, received) == 1
    for connections, expected in ((1, 2), (2, 4), (4, 8), (8, 8)):
        now, received = now + 1, received + connections * 10 * MIB  # each connection capped at 10 MiB/s
        assert scheduler.observe(now, received) == expected
    parts = [Part(offset, 100 * MIB) for offset in range(0, 1000 * MIB, 100 * MIB)]
    cpu_bound = PartScheduler(parts, max_connections=8, min_part_bytes=MIB)
    cpu_bound.observe(0.0, 0)
    assert cpu_bound.observe(1.0, 300 * MIB) == 2
    assert cpu_bound.observe(2.0, 590 * MIB) == 1  # two were no faster than one
    assert cpu_bound.observe(3.0, 890 * MIB) == 1
    parts[0].busy, parts[0].completed = True, 100 * MIB
    rest = cpu_bound.next_part()
    assert (rest.offset, rest.end, len(parts)) == (100 * MIB, 1000 * MIB, 2), "one request for the rest"


def test_saved_parts_come_back_and_a_different_file_starts_over(tmp_path):
    partial = PartialFile.open(tmp_path, 0, size=300, sha256="a" * 64)
    partial.parts = [Part(0, 100), Part(100, 200)]
    partial.write(b"x" * 100, 0)
    partial.write(b"y" * 50, 100)
    partial.parts[0].completed, partial.parts[1].completed = 100, 80  # 30 bytes more than written
    partial.validator = '"etag"'
    partial.save(partial.snapshot())
    partial.close()

    again = PartialFile.open(tmp_path, 0, size=300, sha256="a" * 64)
    assert [(p.offset, p.size, p.completed) for p in again.parts] == [(0, 100, 100), (100, 200, 50)]
    assert again.validator == '"etag"' and again.bytes_completed == 150
    again.close()
    other = PartialFile.open(tmp_path, 0, size=300, sha256="b" * 64)
    assert other.parts == [] and other.data_path.stat().st_size == 0
    other.close()
    assert json.loads(json.dumps(other.snapshot()))["parts"] == []


def test_partial_folders_are_named_by_a_canonical_download_id_only(tmp_path):
    download_id = "0b0c9d52-93a4-4ab8-9a62-51f3b4ad6d53"
    assert download_folder(tmp_path, download_id) == tmp_path / download_id
    for bad in ("../x", "0B0C9D52-93A4-4AB8-9A62-51F3B4AD6D53", "0b0c9d5293a44ab89a6251f3b4ad6d53", ""):
        with pytest.raises(ValueError):
            download_folder(tmp_path, bad)


def test_repo_paths_are_accepted_and_keep_only_their_base_name():
    assert check_repo_filename("Q4_K_M/model-00001-of-00002.gguf") == "Q4_K_M/model-00001-of-00002.gguf"
    assert library_name("Q4_K_M/model-00001-of-00002.gguf") == "model-00001-of-00002.gguf"
    with pytest.raises(InvalidFileError, match="absolute"):
        check_repo_filename("/model.gguf")


def _status(download_id: str, percent: float) -> DownloadStatus:
    return DownloadStatus(
        download_id=download_id, repo_id="a/b", filename="m.gguf", status=DownloadState.downloading,
        progress_percent=percent,
    )


async def test_a_subscriber_that_does_not_read_holds_only_the_latest_state_per_download():
    broadcaster = StatusBroadcaster()
    stuck = broadcaster.subscribe([])
    reader = broadcaster.subscribe([_status("a", 0.0)])
    first = await anext(reader)
    for step in range(1000):
        broadcaster.publish(_status("a", step / 10))
        broadcaster.publish(_status("b", step / 10))
    assert len(stuck._pending) == 2
    latest = [await anext(reader), await anext(reader)]
    assert [(e.status.download_id, e.status.progress_percent) for e in latest] == [("a", 99.9), ("b", 99.9)]
    assert first.event_id < latest[0].event_id < latest[1].event_id
    stuck.close()
    reader.close()
    assert broadcaster.subscriber_count == 0


async def test_a_filtered_subscription_sees_its_download_only_and_ends_when_closed():
    broadcaster = StatusBroadcaster()
    subscription = broadcaster.subscribe([], download_id="a")
    broadcaster.publish(_status("b", 1.0))
    broadcaster.publish(_status("a", 2.0))
    assert (await anext(subscription)).status.download_id == "a"
    waiting = asyncio.create_task(anext(subscription))
    await asyncio.sleep(0.01)
    subscription.close()
    with pytest.raises(StopAsyncIteration):
        await waiting


def test_speed_is_measured_over_the_last_seconds():
    meter = SpeedMeter(window_seconds=5)
    assert meter.bytes_per_second() is None
    for second in range(20):
        meter.sample(second * (1000 if second < 10 else 3000), now=float(second))
    assert meter.bytes_per_second() == pytest.approx(3000, rel=0.01)
