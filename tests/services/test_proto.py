"""Contracts: schemas are current, validation matches the seed, wire evolution rules hold."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timevault.proto import schemas, subjects, upload, wire
from timevault.proto.errors import ServiceError
from timevault.proto.jobs import Job
from timevault.proto.plans import (
    Location,
    PlanCreate,
    Schedule,
    location_url,
    parse_location,
    parse_weekday,
    validate_create,
)


def test_checked_in_schemas_are_current() -> None:
    expected = schemas.render()
    present = {p.name: p.read_text() for p in schemas.SCHEMA_DIR.glob("*.json")}
    stale = sorted(name for name in expected if present.get(name) != expected[name])
    extra = sorted(set(present) - set(expected))
    assert not stale and not extra, (
        f"proto/schemas is stale (run `python -m timevault.proto.schemas`): changed={stale} extra={extra}"
    )


def test_schemas_carry_field_docs() -> None:
    text = schemas.render()["PlanCreate.json"]
    assert "never changed afterwards" in text


def _create(**over: Any) -> PlanCreate:
    """A valid request with some fields replaced (Any: tests also send values of the wrong type)."""
    base = PlanCreate(
        name="Photos", sources=["/home/a/photos"], password="abcd", password_confirm="abcd",
        schedule=Schedule(frequency="daily", time="02:30", timezone="Europe/Berlin"),
        location=Location(type="local", path="/backups/photos"),
    )
    return msgspec.structs.replace(base, **over)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "bad\nname"}, "name"),
        ({"password": "abc", "password_confirm": "abc"}, "password"),
        ({"password_confirm": "abce"}, "password_confirm"),
        ({"sources": []}, "sources"),
        ({"sources": ["relative/path"]}, "sources"),
        ({"schedule": Schedule(frequency="weekly", time="02:30")}, "schedule.weekday"),
        ({"schedule": Schedule(frequency="weekly", time="02:30", weekday=8)}, "schedule.weekday"),
        ({"schedule": Schedule(frequency="daily", time="24:00")}, "schedule.time"),
        ({"schedule": Schedule(frequency="daily", time="7:5")}, "schedule.time"),
        ({"schedule": Schedule(frequency="daily", time="07:05", timezone="Mars/Olympus")}, "schedule.timezone"),
        ({"location": Location(type="local", path="/home/a/photos/backup")}, "location.path"),
        ({"location": Location(type="local", path="rel")}, "location.path"),
        ({"location": Location(type="s3")}, "location.bucket"),
    ],
)
def test_create_validation(over: dict[str, object], field: str) -> None:
    with pytest.raises(ServiceError) as info:
        validate_create(_create(**over))
    assert info.value.code == "invalid"
    assert info.value.field == field


def test_create_normalises() -> None:
    req = validate_create(_create(name="x", password="1234", password_confirm="1234",
                                  sources=["/a/b/", "/a/b"],
                                  schedule=Schedule(frequency="daily", time="23:59", weekday=3)))
    assert req.sources == ["/a/b"]
    assert req.schedule.weekday is None
    assert validate_create(_create(name="ü" * 64)).name == "ü" * 64


def test_weekday_names() -> None:
    assert parse_weekday("monday") == 1
    assert parse_weekday("Sun") == 7
    with pytest.raises(ServiceError):
        parse_weekday("someday")


def test_locations_round_trip() -> None:
    assert parse_location("/tmp/x") == Location(type="local", path="/tmp/x")
    s3 = parse_location("s3://bucket/some/prefix?endpoint=http://localhost:9000&region=eu-west-1")
    assert (s3.bucket, s3.prefix, s3.endpoint, s3.region) == ("bucket", "some/prefix", "http://localhost:9000",
                                                              "eu-west-1")
    assert location_url(s3).startswith("s3://bucket/some/prefix?")


def test_unknown_fields_are_ignored_and_new_fields_default() -> None:
    data = (b'{"id":"j_1","plan_id":"p_1","kind":"backup","status":"pending",'
            b'"created_at":"2026-01-01T00:00:00Z","from_the_future":{"x":1}}')
    job = wire.decode(data, Job)
    assert job.files_done == 0 and job.includes == []


def test_every_struct_field_after_a_default_has_a_default() -> None:
    for message in schemas.MESSAGES:
        seen_default = False
        for field in msgspec.structs.fields(message):
            has_default = field.default is not msgspec.NODEFAULT or field.default_factory is not msgspec.NODEFAULT
            assert has_default or not seen_default, f"{message.__name__}.{field.name} must have a default"
            seen_default = seen_default or has_default


def test_bad_message_is_an_invalid_error() -> None:
    with pytest.raises(ServiceError) as info:
        wire.decode(b'{"plan": 5}', __import__("timevault.proto.plans", fromlist=["PlanRef"]).PlanRef)
    assert info.value.code == "invalid"
    with pytest.raises(ServiceError):
        wire.decode(b"not json", Job)


def test_subjects_reject_wildcards_in_tokens() -> None:
    assert subjects.job_event("j_1") == "tv.events.job.j_1"
    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(ValueError):
            subjects.job_event(bad)


# --- the ``frames`` message of the chunk stream ----------------------------------------------

_frame_payloads = st.lists(st.binary(max_size=300), max_size=12)


@given(_frame_payloads)
@settings(max_examples=60, deadline=None)
def test_frames_message_round_trips(payloads: list[bytes]) -> None:
    head = upload.BlobFrames(blobs=[
        upload.BlobFrame(seq=i + 1, id=bytes([i]) * 32, type=i % 2, raw_length=3 * len(p), size=len(p),
                         part=i % 3 // 2, parts=i % 3 or 1)  # whole blobs, and parts 0/2 and 1/2
        for i, p in enumerate(payloads)])
    buffers = upload.frames_message(head, [memoryview(p) for p in payloads])
    assert buffers[1:] == payloads  # the payloads themselves, not copies joined together
    blobs = upload.read_frames(b"".join(buffers))
    assert [(b.seq, b.id, b.type, b.raw_length, b.part, b.parts) for b, _ in blobs] == \
        [(f.seq, f.id, f.type, f.raw_length, f.part, f.parts) for f in head.blobs]
    assert [bytes(data) for _, data in blobs] == payloads


@given(_frame_payloads.filter(bool), st.data())
@settings(max_examples=60, deadline=None)
def test_frames_message_cut_or_padded_is_refused(payloads: list[bytes], data: st.DataObject) -> None:
    head = upload.BlobFrames(blobs=[upload.BlobFrame(seq=1, id=b"i" * 32, type=0, raw_length=1, size=len(p))
                                    for p in payloads])
    message = b"".join(upload.frames_message(head, payloads))
    cut = data.draw(st.integers(0, len(message) - 1))
    with pytest.raises(ServiceError) as cut_error:
        upload.read_frames(message[:cut])
    assert cut_error.value.code == "invalid"
    with pytest.raises(ServiceError, match="longer than its head"):
        upload.read_frames(message + b"x")


def test_frames_message_with_a_bad_head_is_refused() -> None:
    for message in (b"", b"\x00\x00", b"\x00\x00\x00\x03abc", b"\x00\x00\x00\x01\xc0"):
        with pytest.raises(ServiceError) as error:
            upload.read_frames(message)
        assert error.value.code == "invalid"


@pytest.mark.parametrize(("part", "parts"), [(0, 0), (2, 2), (-1, 2), (5, 3)])
def test_frames_with_impossible_part_numbers_are_refused(part: int, parts: int) -> None:
    head = upload.BlobFrames(blobs=[upload.BlobFrame(seq=1, id=b"i" * 32, type=0, raw_length=9, size=3,
                                                     part=part, parts=parts)])
    with pytest.raises(ServiceError, match="bad part numbers") as error:
        upload.read_frames(b"".join(upload.frames_message(head, [b"abc"])))
    assert error.value.code == "invalid"


def test_a_whole_blobs_frame_head_leaves_out_the_part_fields() -> None:
    """Heads of whole blobs (nearly all) stay as small as before parts existed."""
    whole = msgspec.msgpack.encode(upload.BlobFrame(seq=1, id=b"i" * 32, type=0, raw_length=9, size=3))
    part = msgspec.msgpack.encode(upload.BlobFrame(seq=1, id=b"i" * 32, type=0, raw_length=9, size=3,
                                                   part=1, parts=2))
    assert b"part" not in whole and b"parts" in part
