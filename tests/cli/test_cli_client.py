"""Pure pieces of forgectl.client: addresses, tokens, metadata, exit codes, local input checks."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from forgectl.client import (
    EXIT_JOB_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Address,
    ForgeError,
    call_metadata,
    check_data_file,
    exit_code_for,
    from_rpc_error,
    load_token,
    parse_address,
)


class _Failed(grpc.RpcError):
    """The two methods forgectl reads off a failed call, as grpc's own error objects have them."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, EXIT_USAGE),
        (grpc.StatusCode.NOT_FOUND, EXIT_USAGE),
        (grpc.StatusCode.FAILED_PRECONDITION, EXIT_USAGE),
        (grpc.StatusCode.ALREADY_EXISTS, EXIT_USAGE),
        (grpc.StatusCode.OUT_OF_RANGE, EXIT_USAGE),
        (grpc.StatusCode.UNAUTHENTICATED, EXIT_USAGE),
        (grpc.StatusCode.PERMISSION_DENIED, EXIT_USAGE),
        (grpc.StatusCode.UNAVAILABLE, EXIT_UNREACHABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, EXIT_UNREACHABLE),
        (grpc.StatusCode.INTERNAL, EXIT_JOB_FAILED),
        (grpc.StatusCode.UNKNOWN, EXIT_JOB_FAILED),
        (None, EXIT_JOB_FAILED),
    ],
)
def test_status_code_to_exit_code(code: grpc.StatusCode | None, expected: int) -> None:
    assert exit_code_for(code) == expected


def test_rpc_error_becomes_one_line_with_its_code() -> None:
    err = from_rpc_error(
        _Failed(grpc.StatusCode.NOT_FOUND, "no job 'j-x'\n(list yours with `forgectl jobs`)")
    )
    assert err.message == "no job 'j-x' (list yours with `forgectl jobs`)"
    assert err.code == "NOT_FOUND"
    assert err.exit_code == EXIT_USAGE


def test_rpc_error_without_details_names_the_code() -> None:
    err = from_rpc_error(_Failed(grpc.StatusCode.UNAVAILABLE, ""))
    assert err.message == "unavailable"
    assert err.exit_code == EXIT_UNREACHABLE


@pytest.mark.parametrize(
    ("text", "scheme", "location", "target"),
    [
        (
            "unix:///run/forged/forged.sock",
            "unix",
            "/run/forged/forged.sock",
            "unix:///run/forged/forged.sock",
        ),
        ("unix:rel/forged.sock", "unix", "/work/x/rel/forged.sock", "unix:///work/x/rel/forged.sock"),
        ("/tmp/f.sock", "unix", "/tmp/f.sock", "unix:///tmp/f.sock"),
        ("tcp://127.0.0.1:7474", "tcp", "127.0.0.1:7474", "127.0.0.1:7474"),
        ("tcp://gpu-box.lan:7474/", "tcp", "gpu-box.lan:7474", "gpu-box.lan:7474"),
        ("tcp://[::1]:7474", "tcp", "[::1]:7474", "[::1]:7474"),
        ("localhost:7474", "tcp", "localhost:7474", "localhost:7474"),
    ],
)
def test_parse_address(text: str, scheme: str, location: str, target: str) -> None:
    addr = parse_address(text, cwd=Path("/work/x"))
    assert (addr.scheme, addr.location, addr.target) == (scheme, location, target)


def test_address_host_and_display() -> None:
    assert parse_address("tcp://[::1]:7474").host == "::1"
    assert str(parse_address("tcp://h:1")) == "tcp://h:1"
    assert str(Address("unix", "/a/b.sock")) == "unix:///a/b.sock"


@pytest.mark.parametrize(
    "text",
    ["", "unix://relative.sock", "unix:", "tcp://nohost", "tcp://h:0", "tcp://h:99999", "http://h:1", "h:x"],
)
def test_bad_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(ForgeError) as info:
        parse_address(text)
    assert info.value.exit_code == EXIT_USAGE


def test_token_env_beats_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    assert load_token({"FORGE_TOKEN": "  from-env \n"}, tmp_path) == "from-env"
    assert load_token({}, tmp_path) == "from-file"
    assert load_token({"FORGE_TOKEN": "   "}, tmp_path) == "from-file"


def test_token_missing_or_blank(tmp_path: Path) -> None:
    assert load_token({}, tmp_path) is None
    (tmp_path / "token").write_text(" \n")
    assert load_token({}, tmp_path) is None


def test_unreadable_token_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").mkdir()  # reading a directory fails whoever runs the test, root included
    with pytest.raises(ForgeError):
        load_token({}, tmp_path)


def test_metadata_carries_token_and_user() -> None:
    assert call_metadata("abc", "ada") == (("authorization", "Bearer abc"), ("x-forge-user", "ada"))
    assert call_metadata(None, "ada") == (("x-forge-user", "ada"),)


def test_data_file_checks(tmp_path: Path) -> None:
    good = tmp_path / "d.csv"
    good.write_text("instruction,output\na,b\n")
    assert check_data_file(str(good)) == good
    cases = {
        str(tmp_path / "missing.csv"): "does not exist",
        str(tmp_path): "is a directory",
    }
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases[str(empty)] = "is empty"
    if os.path.exists("/dev/null"):
        cases["/dev/null"] = "not a regular file"
    for path, reason in cases.items():
        with pytest.raises(ForgeError) as info:
            check_data_file(path)
        assert reason in info.value.message
        assert info.value.exit_code == EXIT_USAGE
