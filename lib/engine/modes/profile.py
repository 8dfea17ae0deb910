"""`python main.py --config X --mode profile [--budget 24GB]`: lib.profiler's memory report of the
recipe's model on its first training batch, the points->memory fit, and the largest limit_numpoints
for a budget. Returns no scores.

Writes (rank 0 only) <run>/memory_report.json (cfg.profile.json_name), memory_timeline.png and, with
profile.chrome_trace, memory_trace.json; prints the table. Runs inside oom_guard, so running out of
memory here leaves <run>/oom_report.json and re-raises.
"""
import json
import logging

from lib.engine.data import make_loader
from lib.engine.inputs import for_model
from lib.engine.process import to_log_file
from lib.engine.state_check import load_weights
from lib.profiler import MemoryProfiler, format_report, oom_guard, static_bytes
from lib.profiler.fit import measure_points_model, optimizer_state_bytes, train_pass
from lib.profiler.timeline import save_chrome_trace, save_png
from lib.units import mib, parse_bytes

log = logging.getLogger("voxseg")


def run(run):
    run_profile_mode(run)
    return None, 0


def run_profile_mode(run) -> dict:
    """Profile `run` (a lib.engine RunContext: cfg, device, rank, run_dir, build_dataset, build_model,
    collate_fn, make_input, weights). Returns the report dict (every rank computes it)."""
    cfg, pcfg, device = run.cfg, run.cfg.profile, run.device
    with oom_guard(run.run_dir, rank=run.rank, depth=pcfg.depth) as guard:
        dataset = run.build_dataset(cfg.data, "train")
        model = run.build_model(cfg.model, dataset.meta.in_channels, dataset.meta.num_classes).to(device)
        if run.weights:
            load_weights(model, run.weights)
        guard.watch(model)
        make_input = for_model(run.make_input, model)  # SparseTensor or PointBatch, as the model declares
        loader = make_loader(dataset, cfg.data.batch_size, 0, run.collate_fn, shuffle=True, seed=cfg.seed)
        batch = next(iter(loader))
        model.train()
        for _ in range(pcfg.warmup):
            train_pass(model, make_input(batch, device))
            model.zero_grad(set_to_none=True)
        with MemoryProfiler(model, device, depth=pcfg.depth) as prof:
            for _ in range(pcfg.iterations):
                train_pass(model, make_input(batch, device))
                model.zero_grad(set_to_none=True)
        report = prof.report()
        params = static_bytes(model)
        resident = params + optimizer_state_bytes(cfg.train.optimizer, params)
        points, samples = measure_points_model(model, batch, make_input, device, pcfg.fit_fractions,
                                               resident_bytes=resident)
    report["points_model"] = points.as_dict()
    report["points_samples"] = [{"voxels": n, "bytes": b} for n, b in samples]
    report["optimizer_state_bytes"] = resident - params
    if cfg.data.memory_budget:
        budget = parse_bytes(cfg.data.memory_budget)
        report["budget"] = {"memory_budget": cfg.data.memory_budget, "bytes": budget,
                            "limit_numpoints": points.largest_fitting(budget)}
    if run.rank == 0:
        _write(run, prof, report)
    return report


def _write(run, prof, report) -> None:
    pcfg = run.cfg.profile
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / pcfg.json_name).write_text(json.dumps(report, indent=1))
    if pcfg.timeline_png:
        save_png(prof, run.run_dir / "memory_timeline.png",
                 f"{run.cfg.model.name}, {report['voxels']} voxels, {report['device']}")
    if pcfg.chrome_trace:
        save_chrome_trace(prof, run.run_dir / "memory_trace.json")
    table = format_report(report)
    budget = report.get("budget")
    if budget:
        table += (f"\nlargest data.limit_numpoints for memory_budget {budget['memory_budget']} "
                  f"({mib(budget['bytes'])} MiB): {budget['limit_numpoints']}")
    print(table)
    to_log_file(f"memory report\n{table}")
    log.info("memory report written to %s", run.run_dir / pcfg.json_name)
