"""The ``mamba4net`` command: run, validate, evaluate, bench, export, report, plugins, new-plugin, data.

Problems with the user's input (config, plugin names, data) end in one line on stderr and exit code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s mamba4net: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("transformers", "peft", "urllib3", "matplotlib", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_results(root) -> None:
    from mamba4net.core.io import read_json
    from mamba4net.core.report import results_table

    results = read_json(Path(root) / "results.json", missing_ok=True)
    if results is not None:
        print(results_table(results))
    print(f"run directory: {root}")


def cmd_run(args) -> int:
    from mamba4net.core.config import load_config
    from mamba4net.core.errors import ResultError
    from mamba4net.core.pipeline import resolve_run_dir, run_pipeline

    from mamba4net.core import distributed as dist

    if args.seeds is not None:
        return _run_seeds(args)
    if any("{seed}" in o for o in args.set):
        from mamba4net.core.errors import ConfigError

        raise ConfigError("--set: {seed} is filled in per seed by --seeds only")
    loaded = load_config(args.config, args.set)
    if args.no_progress:
        loaded.cfg.runtime.progress = False
    run_root = resolve_run_dir(loaded, args.out, args.resume)
    if args.nproc is not None:  # this process only launches the ranks, each runs `run --out run_root`
        code = _launch_ranks(args, loaded, run_root)
        if code:
            print(f"mamba4net: error: a rank failed (exit code {code}); run directory: {run_root}", file=sys.stderr)
            return code
        from mamba4net.core.runs import RunDir

        run = RunDir(run_root)
    else:
        try:
            run = run_pipeline(loaded, run_root, resume=args.resume)
        except ResultError:  # everything was written: show it, then the one line
            _print_results(run_root)
            raise
        if not dist.is_main():
            return 0
    _print_results(run.root)
    return 0


def _run_seeds(args) -> int:
    from mamba4net.core.config import load_config
    from mamba4net.core.errors import ConfigError, Mamba4netError
    from mamba4net.core.runs import new_run_dir
    from mamba4net.core.seeds import for_seed, parse_seeds, run_seeds, seeds_markdown

    seeds = parse_seeds(args.seeds)
    configs = [load_config(args.config, for_seed(args.set, s)) for s in seeds]  # every seed's, before any work
    loaded = configs[0]
    if args.nproc is not None:
        raise ConfigError("--seeds runs its seeds one after the other in this process: drop --nproc")
    if args.resume and not args.out:
        raise Mamba4netError("--resume with --seeds needs --out, the folder holding the seed-<k> runs")
    out = Path(args.out) if args.out else new_run_dir("runs", f"{loaded.cfg.name}-seeds")
    overrides = list(args.set) + (["runtime.progress=false"] if args.no_progress else [])
    summary = run_seeds(args.config, out, seeds, overrides, resume=args.resume)
    print(seeds_markdown(summary))
    print(f"runs and seeds.json/seeds.md written to: {out}")
    return 0


def _launch_ranks(args, loaded, run_root) -> int:
    from mamba4net.core import distributed as dist
    from mamba4net.core.errors import ConfigError

    if "RANK" in os.environ:
        raise ConfigError("--nproc: this process is already one rank of a launched run")
    if loaded.cfg.runtime.engine != "deepspeed":
        raise ConfigError(f"--nproc {args.nproc}: several processes need runtime.engine: deepspeed "
                          f"(add --set runtime.engine=deepspeed)")
    argv = [*(["--debug"] if args.debug else []), *(["-v"] if args.verbose else []), "run", args.config]
    for assignment in args.set:
        argv += ["--set", assignment]
    argv += ["--out", str(run_root)] + (["--resume"] if args.resume else [])
    argv += ["--no-progress"] if args.no_progress else []
    return dist.launch_local(dist.cli_command(argv), args.nproc)


def cmd_validate(args) -> int:
    from mamba4net.core.config import load_config

    loaded = load_config(args.config, args.set)
    cfg, method = loaded.cfg, loaded.method
    roles = ", ".join(f"{r.kind} {r.name} ({getattr(cfg, r.config_key)['name']})" for r in method.roles)
    print(f"{args.config}: ok (task {cfg.task['name']}; method {method.name}: {method.describe()}; {roles})")
    return 0


def cmd_evaluate(args) -> int:
    from mamba4net.core.pipeline import evaluate_run
    from mamba4net.core.report import results_table

    from mamba4net.core.io import read_json

    out = evaluate_run(args.run_dir, args.set, bench=False if args.no_bench else None)
    print(results_table(read_json(out.results_path)))
    print(f"evaluation written to: {out.root}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def cmd_bench(args) -> int:
    from mamba4net.core.bench.command import bench_target
    from mamba4net.core.bench.tables import size_table, throughput_table

    plan_args = {"full": args.full, "seq_lens": args.seq_lens, "batch_sizes": args.batch_sizes,
                 "history_lens": args.history_lens, "repeats": args.repeats, "budget_s": args.budget,
                 "memory": False if args.no_memory else None, "roles": args.roles}
    out, bench = bench_target(args.target, args.set, args.out, plan_args, progress=not args.no_progress,
                              against=args.against)
    print(size_table(bench))
    print(throughput_table(bench))
    print(f"bench written to: {out} (bench.json, bench.md, plots)")
    return 0


def cmd_export(args) -> int:
    from mamba4net.core.io import read_json
    from mamba4net.core.onnx_export import export_run

    for manifest_path in export_run(args.run_dir):
        m = read_json(manifest_path)
        state = f"{len(m['state'])} state tensors in and out" if m["stateful"] else "no state between decisions"
        print(f"{m['role']}: {manifest_path.parent / m['onnx']} ({m['bytes'] / 1024:.1f} KiB; inputs "
              f"{', '.join(m['inputs'])}; {state}; onnxruntime vs PyTorch max |diff| "
              f"{m['max_abs_diff_vs_torch']:.2g}); manifest {manifest_path}")
    return 0


def cmd_report(args) -> int:
    from mamba4net.core.report import render_report

    print(f"report written to: {render_report(args.run_dir)}")
    return 0


def cmd_data(args) -> int:
    from mamba4net.core import datasets
    from mamba4net.core.errors import DataError
    from mamba4net.core.paths import cache_dir, default_data_dir
    from mamba4net.registry import default_registry

    ms = datasets.manifests(default_registry(), args.tasks)
    if args.action == "list":
        root = default_data_dir()
        print(f"data folder: {root}")
        for m in ms:
            here = sum((root / m.folder / f.path).is_file() for f in m.files)
            derived = sum(f.source is None for f in m.files)
            print(f"  {m.name:<8} {len(m.files):>5} files {m.bytes / 2**20:7.1f} MiB  present {here}/{len(m.files)}  "
                  f"(derived: {derived}; upstream: {next((f.source for f in m.files if f.source), '-')[:60]}...)")
        return 0
    if args.action == "verify":
        root = Path(args.dir) if args.dir else default_data_dir()
        problems = datasets.verify(root, ms, progress=not args.no_progress)
        total = sum(len(m.files) for m in ms)
        if not problems:
            print(f"{root}: all {total} files of {', '.join(m.name for m in ms)} verify")
            return 0
        for name, files in problems.items():
            for rel, why in sorted(files.items()):
                print(f"{root / name / rel}: {why}")
        bad = sum(len(v) for v in problems.values())
        raise DataError(f"{root}: {bad} of {total} files missing or altered (listed above); "
                        "mamba4net data fetch repairs them")
    target = args.to or args.dir
    to = Path(target) if target else cache_dir() / "data"
    out = datasets.fetch(to, ms, mirror=args.mirror, progress=not args.no_progress)
    print(f"{to}: fetched {out['fetched']}, already good {out['already_good']}, failed {len(out['failed'])}")
    for name, why in sorted(out["failed"].items())[:20]:
        print(f"  {name}: {why}")
    if out["failed"]:
        raise DataError(f"{len(out['failed'])} files could not be fetched (listed above); run again to resume")
    return 0


def cmd_new_plugin(args) -> int:
    from mamba4net.registry.scaffold import new_plugin

    dest = new_plugin(args.name, args.dir)
    print(f"plugin package written to {dest}\n  cd {dest} && pip install -e . && python -m pytest -q tests")
    return 0


def cmd_plugins(args) -> int:
    from mamba4net.registry import KINDS, default_registry

    reg = default_registry()
    if args.json:
        components = {k: {c.name: c.owner for c in reg.kind(k).items()} for k in KINDS}
        data = {
            "plugins": {n: vars(p) for n, p in reg.plugins.items()},
            "failed": {n: {**vars(f), "provides": sorted(f.provides)} for n, f in reg.failed.items()},
            "components": components,
        }
        print(json.dumps(data, indent=2))
        return 0
    kinds = {k: reg.kind(k).items() for k in KINDS}  # collects the components (a hook may fail)
    print("plugins:")
    for name, info in sorted(reg.plugins.items()):
        print(f"  {name:<16} {info.distribution} {info.version}  ({info.module})")
    for name, failed in sorted(reg.failed.items()):
        print(f"  {name:<16} FAILED  {failed.distribution} {failed.version}  ({failed.module}): {failed.reason}")
    for kind, items in kinds.items():
        print(f"{kind}:")
        if not items:
            print("  (none)")
        for c in items:
            extra = "".join(f" {k}={c.meta[k]}" for k in ("op", "priority", "task") if k in c.meta)
            if kind == "methods":
                extra += f"  stages: {_method_stages(c)}"
            print(f"  {c.name:<24} from {c.owner}{extra}")
    return 0


def _method_stages(component) -> str:
    """A method's stages with its default params (or why they can't be listed)."""
    try:
        return component.build({}).describe()
    except Exception as exc:  # a method whose params have required fields, or a broken factory
        return f"(need params: {type(exc).__name__})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mamba4net", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_set(p):
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (dotted path, YAML value); repeatable")

    p = sub.add_parser("run", help="run a pipeline from a YAML config")
    p.add_argument("config")
    with_set(p)
    p.add_argument("--out", help="run directory (default: runs/<name>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="run N local processes (runtime.engine: deepspeed; data split over ranks)")
    p.add_argument("--seeds", metavar="LIST", help="run once per training seed (e.g. 0,1,2 or 0-4) into "
                   "OUT/seed-<k>/ and write OUT/seeds.md: each model's metric, mean and 95%% interval over seeds; "
                   "{seed} in a --set value becomes each seed")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("validate", help="check a config without running it")
    p.add_argument("config")
    with_set(p)
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("evaluate", help="re-evaluate a finished run (e.g. on other data) without training")
    p.add_argument("run_dir")
    with_set(p)
    p.add_argument("--no-bench", action="store_true", help="skip the efficiency benchmark")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("bench", help="efficiency of teacher vs student: size, throughput (and its FLOP bound), "
                                     "latency, memory")
    p.add_argument("target", help="a config YAML (models built fresh) or a run directory (its finished weights)")
    with_set(p)
    p.add_argument("--out", help="output folder (default: the run directory, or runs/bench-<name>-<timestamp>)")
    p.add_argument("--seq-lens", type=_int_list, help="sequence lengths, e.g. 256,1024,4096")
    p.add_argument("--batch-sizes", type=_int_list, help="batch sizes, e.g. 1,4,16")
    p.add_argument("--history-lens", type=_int_list, help="streaming history lengths, e.g. 16,256,4096")
    p.add_argument("--full", action="store_true", help="the long sweep: batch 1..64, L 256..8192, history 16..8192")
    p.add_argument("--repeats", type=int, help="timed calls per point (median reported)")
    p.add_argument("--budget", type=float, help="seconds per point; costlier points are skipped (and listed)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--roles", type=lambda t: [r.strip() for r in t.split(",") if r.strip()],
                   help="the deployed roles to measure, e.g. teacher,student (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--against", action="append", metavar="teacher.KEY=VALUE",
                   help="compare the students with another teacher, built fresh from the config's teacher node "
                        "with this override (YAML value; repeatable): its pretrained or random weights as the "
                        "config builds them, LoRA merged, never the run's adapted ones (speed does not depend on "
                        "them). E.g. --against teacher.num_layers=30: the whole 30-layer SmolLM2, the paper's "
                        "comparison. A run's students keep their trained weights; the run's results and report "
                        "are not touched: written to --out, default RUN_DIR/bench-against-<overrides>/ (a config: "
                        "runs/bench-<name>-against-<timestamp>)")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("export", help="each deployed student of a finished run as ONNX (RUN_DIR/deploy/)")
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("report", help="re-render a run's report.md from results.json and bench.json")
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("data", help="the tasks' data: list, verify a folder, fetch what is missing")
    p.add_argument("action", choices=["list", "verify", "fetch"])
    p.add_argument("dir", nargs="?", help="verify: the data folder (default: the one runs use); fetch: as --to")
    p.add_argument("--tasks", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                   help="datasets to act on, e.g. vp,abr (default: all)")
    p.add_argument("--to", help="fetch: the data folder to fill (default: the cache, ~/.cache/mamba4net/data)")
    p.add_argument("--mirror", help="fetch: base URL of a mirror of the data folder (default: the pinned upstream)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("new-plugin", help="write a minimal working task plugin package to start from")
    p.add_argument("name", help="the plugin's name: its task, package and entry point (e.g. my_task)")
    p.add_argument("--dir", default=".", help="where to create the package folder (default: here)")
    p.set_defaults(fn=cmd_new_plugin)

    p = sub.add_parser("plugins", help="list plugins and every registered component by kind")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars would mix with ours
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    if int(os.environ.get("RANK", 0)) > 0:  # a launched rank other than 0: rank 0 speaks for the run
        logging.getLogger("mamba4net").setLevel(logging.WARNING)
    return guarded(lambda: args.fn(args), debug=args.debug)


LABELS = {"ConfigError": "config error", "DataError": "data error", "PluginError": "plugin error",
          "WriteError": "write error", "BusyError": "busy", "ResultError": "result error"}


def guarded(fn, debug: bool = False) -> int:
    """``fn()``'s exit code; a platform error or a refused file operation is one line on stderr
    (``--debug``: the traceback instead)."""
    from mamba4net.core.errors import Mamba4netError, one_line

    try:
        return fn()
    except Mamba4netError as err:
        if debug:
            raise
        print(f"mamba4net: {LABELS.get(type(err).__name__, 'error')}: {one_line(str(err))}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a file the system refused (permissions, disk full) outside the writers
        if debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"mamba4net: file error: {one_line(where + str(err.strerror or err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mamba4net: interrupted; checkpoints written so far are kept (continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
