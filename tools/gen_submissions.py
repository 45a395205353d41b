"""Writes a class's worth of uploads for timing `hw9-grade [--read-outputs] <folder>` (BENCHMARKS.md).

    python tools/gen_submissions.py --from A.zip [B.zip ...] --out build/class --students 300

Each student gets one upload, copied from one of the given real submissions in turn, in
`<out>/student-NNN/hw9_submission.zip`; every 25th is tampered (a member changed after the
manifest was written), every 40th truncated, every 60th a foreign zip: the mix a TA meets.
"""

import argparse
import io
import pathlib
import zipfile


def tampered(data: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "submission_log.json":
                body = body.replace(b'"profile"', b'"profile" ', 1)
            z.writestr(info.filename, body)
    return out.getvalue()


def foreign() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("homework.py", "print('hello')\n")
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="sources", nargs="+", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--students", type=int, default=300)
    args = ap.parse_args()
    real = [p.read_bytes() for p in args.sources]
    for i in range(args.students):
        data = real[i % len(real)]
        if i % 60 == 59:
            data = foreign()
        elif i % 40 == 39:
            data = data[: len(data) // 2]
        elif i % 25 == 24:
            data = tampered(data)
        path = args.out / f"student-{i:03d}" / "hw9_submission.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"{args.students} uploads in {args.out}")


if __name__ == "__main__":
    main()
