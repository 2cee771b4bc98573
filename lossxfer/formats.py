"""Names and versions of lossxfer's file formats (docs/formats.md), and the one check for them."""

from __future__ import annotations

from lossxfer.errors import InputError

CHECKPOINT = "lossxfer.checkpoint/1"
ACTIVATIONS = "lossxfer.activations/1"
RESULT = "lossxfer.result/1"
CKA_SHARD = "lossxfer.cka-shard/1"


def check_format(found: object, expected: str, source: object) -> None:
    """Accept exactly `expected` ("name/version"); say precisely what is wrong otherwise."""
    name, _, version = expected.partition("/")
    if not isinstance(found, str) or not found:
        raise InputError(f"{source}: not a {name} file (no format tag)")
    found_name, _, found_version = found.partition("/")
    if found_name != name:
        raise InputError(f"{source}: is a {found_name!r} file, expected {name}")
    if found_version != version:
        newer = found_version.isdigit() and int(found_version) > int(version)
        what = "a newer" if newer else "an unsupported"
        raise InputError(
            f"{source}: {what} format version {found_version!r} of {name} "
            f"(this lossxfer reads version {version})"
        )
