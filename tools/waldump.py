"""Print the frames of WAL segments, one line each, for debugging (read-only).

Usage: python tools/waldump.py DIR_OR_SEGMENT [...] [--ops]

Shows each segment header, then per frame: offset, LSN, commit version, time,
op count (and with --ops every op's key and value size). Stops a segment at
its first bad frame and says why, the way recovery would see it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.checkout import use_checkout  # noqa: E402

use_checkout()

from inmem.wal.format import (  # noqa: E402
    SEGMENT_HEADER_SIZE,
    FrameError,
    check_frame,
    decode_commit,
    decode_segment_header,
    parse_segment_name,
)


def dump(path: str, ops: bool) -> None:
    buf = open(path, "rb").read()
    try:
        h = decode_segment_header(buf)
    except FrameError as exc:
        print(f"{path}: bad segment header: {exc.reason}")
        return
    print(f"{path}: format {h.format_version}, db {h.db_id.hex()}, seq {h.seq}, first LSN {h.first_lsn}, "
          f"{len(buf)} bytes")
    pos = SEGMENT_HEADER_SIZE
    while pos < len(buf):
        try:
            lsn, _rtype, start, end = check_frame(buf, pos)
            version, ts, writes = decode_commit(buf, start, end)
        except FrameError as exc:
            print(f"  @{pos}: BAD FRAME: {exc.reason} ({len(buf) - pos} bytes follow)")
            return
        when = dt.datetime.fromtimestamp(ts / 1e6, dt.timezone.utc).isoformat(timespec="milliseconds")
        print(f"  @{pos}: lsn {lsn} version {version} {when} ops {len(writes)} ({end - pos} bytes)")
        if ops:
            for key, value in writes:
                what = "delete" if value is None else f"put {len(value)} B"
                print(f"      {what} {key.hex()}")
        pos = end


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="database directories or segment files")
    p.add_argument("--ops", action="store_true", help="list every op of every commit")
    args = p.parse_args()
    for path in args.paths:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if parse_segment_name(name) is not None:
                    dump(os.path.join(path, name), args.ops)
        else:
            dump(path, args.ops)


if __name__ == "__main__":
    main()
