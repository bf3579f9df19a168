"""``gpulog`` command line: ``inspect`` a logdir, ``sync`` staged remote segments, run the ``demo``,
run the ``bench``mark suite."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, Dict, List, Optional, Tuple


def _kind(v: object) -> str:
    kind = getattr(v, "kind")
    plugin = getattr(v, "plugin_name")
    if plugin == "scalars":  # new-style scalars (a one-element tensor) are scalars too
        return "scalar"
    if kind == "tensor" or (kind == "empty" and plugin):
        return plugin or "tensor"
    return kind


def _value(v: object) -> str:
    """The last value in one line, by the kind's own module (``_encode.<kind>.describe``)."""
    from ._encode import plugin_of, plugins
    module = plugins().get(plugin_of(v))
    if module is None:
        return ""
    try:
        return str(module.describe(module.parse(v)))
    except Exception:  # noqa: BLE001 - a value gpulog did not write: show the row, not a traceback
        return "?"


def inspect_rows(logdir: str) -> List[Tuple[str, str, str, object, object, object]]:
    """(run, tag, kind, count, last step, last value) for every tag of every run; a model graph
    is listed as tag ``(graph)``, run metadata as ``(run metadata) <tag>``.  With the native
    extension the scalars are counted from a C scan of each file and only the events holding
    anything else are decoded in Python (a log dir of scalars reads at the scan's speed)."""
    from .reader import _fs, iter_events, runs, scan_files
    from ._proto.decode import parse_event
    rows = []
    fs = _fs(logdir)
    for run, files in runs(logdir).items():
        tags: Dict[Tuple[str, str], List[object]] = {}

        def seen(key: Tuple[str, str], step: int, last: Callable[[], str], n: int = 1) -> None:
            entry = tags.setdefault(key, [0, 0, None])
            entry[0] += n  # type: ignore[operator]
            entry[1], entry[2] = step, last

        def event(ev: object) -> None:
            if getattr(ev, "has_graph"):
                seen(("(graph)", "graph"), getattr(ev, "step"),
                     functools.partial(_graph_value, getattr(ev, "graph_def")))
            if getattr(ev, "run_metadata_tag"):
                seen((f"(run metadata) {getattr(ev, 'run_metadata_tag')}", "run_metadata"),
                     getattr(ev, "step"), str)
            for v in getattr(ev, "values"):
                if _kind(v) != "scalar" or native is None:  # the scan counted the scalars
                    seen((v.tag, _kind(v)), getattr(ev, "step"), functools.partial(_value, v))

        others: List[Tuple[str, bytes]] = []
        native = scan_files(files, fs, others)
        if native is None:
            for f in files:
                for ev in iter_events(f, check_crc=True):
                    event(ev)
        else:
            _scalar_rows(native, seen)
            for _, payload in others:
                event(parse_event(payload))
        # Only each tag's last value is shown: it alone is parsed and described.
        for (tag, kind), (count, step, last) in sorted(tags.items()):
            rows.append((run, tag, kind, count, step, last()))  # type: ignore[arg-type,misc,operator]
    return rows


def _scalar_rows(scan: Tuple[object, ...], seen: Callable[..., None]) -> None:
    """Each scalar tag's count, last step and last value from the native scan's arrays."""
    import numpy as np
    from ._encode import scalar as enc_scalar
    tags, ids, steps, values = scan
    ids = np.asarray(ids)
    n_tags = len(tags)  # type: ignore[arg-type]
    if not len(ids):
        return
    counts = np.bincount(ids, minlength=n_tags)
    last = np.full(n_tags, -1, dtype=np.int64)
    np.maximum.at(last, ids, np.arange(len(ids)))  # each tag's last position in file order
    names: List[str] = list(tags)  # type: ignore[call-overload]
    for i, tag in enumerate(names):
        if counts[i]:
            j = int(last[i])
            value = float(values[j])  # type: ignore[index]
            seen((tag, "scalar"), int(steps[j]),  # type: ignore[index]
                 functools.partial(enc_scalar.describe, {"value": value}), int(counts[i]))


def _graph_value(data: bytes) -> str:
    """``<n> nodes`` of a GraphDef, read with gpulog's GraphDef class (checks it parses)."""
    if not data:
        return ""
    from google.protobuf.message import DecodeError
    from ._proto.graph import message
    try:
        return f"{len(message('GraphDef').FromString(data).node)} nodes"
    except DecodeError:
        return "unreadable GraphDef"


def cmd_inspect(args: argparse.Namespace) -> int:
    import os
    from ._remote import is_remote
    if not is_remote(args.logdir) and not os.path.isdir(args.logdir):
        print(f"gpulog inspect: {args.logdir!r} is not a directory", file=sys.stderr)
        return 2
    import warnings
    with warnings.catch_warnings(record=True) as problems:
        warnings.simplefilter("always")
        rows = inspect_rows(args.logdir)
    for w in problems:  # one line per damaged record, never a traceback
        print(f"gpulog inspect: warning: {w.message}", file=sys.stderr)
    if not rows:
        print(f"no events under {args.logdir}")
        return 1
    head = ("run", "tag", "kind", "count", "last step", "last value")
    if args.json or args.csv:
        keys = ("run", "tag", "kind", "count", "last_step", "last_value")
        records = [dict(zip(keys, r)) for r in rows]
        if args.json:
            import json
            print(json.dumps(records, indent=1))
        else:
            import csv
            out = csv.DictWriter(sys.stdout, fieldnames=keys)
            out.writeheader()
            out.writerows(records)
        return 0
    table = [head] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for line in watch_summary(rows, args.logdir):
        print(line)
    return 0


def _full_text(logdir: str, run: str, tag: str) -> Optional[str]:
    """The whole text of ``tag``'s first value in ``run`` (the table shows 40 characters)."""
    from ._encode import text as enc_text
    from .reader import iter_events, runs
    for f in runs(logdir).get(run, []):
        for ev in iter_events(f, check_crc=True):
            for v in ev.values:
                if v.tag == tag:
                    return str(enc_text.parse(v)["text"])
    return None


def watch_summary(rows: List[Tuple[str, str, str, object, object, object]], logdir: str,
                  top: int = 5) -> List[str]:
    """For runs written by ``SummaryWriter.watch``: the watched tensors with the largest last
    gradient norms, and the first non-finite record."""
    out: List[str] = []
    for run in dict.fromkeys(r[0] for r in rows):
        norms = []
        first = None
        for r_run, tag, kind, _, step, last in rows:
            if r_run != run:
                continue
            if tag.endswith("first_nonfinite/text_summary"):
                first = f"{_full_text(logdir, run, tag) or last} (logged at step {step})"
            elif kind == "scalar" and "grad_norm/" in tag and not tag.endswith("total_grad_norm"):
                try:
                    norms.append((float(str(last)), tag.split("grad_norm/", 1)[1], step))
                except ValueError:
                    continue
        if not norms and first is None:
            continue
        out.append("")
        out.append(f"watched model, run {run!r}:")
        if norms:
            finite = sorted((n for n in norms if n[0] == n[0]), reverse=True)
            out.append(f"  largest gradient norms (last step), {min(top, len(finite))} of {len(norms)} tensors:")
            for value, name, step in finite[:top]:
                out.append(f"    {name}: {value:.6g} at step {step}")
        out.append(f"  first non-finite: {first or 'none logged'}")
    return out


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload the segments a remote log dir left staged (store outage, exit timeout, kill -9)."""
    from ._remote import staging_root, sync, sync_folders
    path = args.folder or staging_root()
    folders = sync_folders(path)
    if not folders:
        print(f"gpulog sync: nothing staged under {path}")
        return 0
    failed = 0
    for folder in folders:
        done, problems = sync(folder, force=args.force)
        for p in problems:
            print(f"gpulog sync: {p}", file=sys.stderr)
        failed += bool(problems)
        if not problems:
            print(f"gpulog sync: {folder}: {done} segment(s) uploaded")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo(args.logdir, args.steps, args.device)


def _load_benchmarks() -> object:
    """The checkout's benchmarks/ package, loaded by path (the repository root is never put on
    sys.path, which would also make a top-level ``kernels`` importable)."""
    import importlib
    import importlib.util
    import os
    if "benchmarks" not in sys.modules:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        init = os.path.join(root, "benchmarks", "__init__.py")
        if not os.path.exists(init):
            raise ImportError("benchmarks/ not found next to the gpulog package")
        spec = importlib.util.spec_from_file_location("benchmarks", init,
                                                      submodule_search_locations=[os.path.dirname(init)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("benchmarks.__main__")


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        bench = _load_benchmarks()
    except ImportError:
        print("gpulog bench runs the benchmarks/ of a source checkout (pip install -e .); "
              "from a checkout you can also run: python -m benchmarks", file=sys.stderr)
        return 2
    return int(bench.main(args.rest))  # type: ignore[attr-defined]


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after `bench` belongs to the benchmark suite
        return cmd_bench(argparse.Namespace(rest=argv[1:]))
    ap = argparse.ArgumentParser(prog="gpulog", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inspect", help="table of runs, tags, kinds, counts and last values")
    p.add_argument("logdir")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON list of rows")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(fn=cmd_inspect)
    p = sub.add_parser("sync", help="upload remote-log-dir segments left in the staging folder")
    p.add_argument("folder", nargs="?", default=None,
                   help="a staging folder, or the staging root (default: $GPULOG_STAGING_DIR or "
                        "~/.cache/gpulog/staging)")
    p.add_argument("--force", action="store_true", help="also folders of processes still running")
    p.set_defaults(fn=cmd_sync)
    p = sub.add_parser("demo", help="train a small model and log every summary kind")
    p.add_argument("--logdir", default="runs/gpulog-demo")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.set_defaults(fn=cmd_demo)
    sub.add_parser("bench", help="run the benchmark suite: gpulog bench [--device D] [--quick] [--only PART]")
    args = ap.parse_args(argv)
    try:
        return int(args.fn(args))
    except BrokenPipeError:  # `gpulog inspect runs | head`: the reader left; end quietly
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0


if __name__ == "__main__":
    sys.exit(main())
