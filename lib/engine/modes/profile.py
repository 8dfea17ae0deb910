"""`--mode profile`: lib.profiler's memory report of the recipe's model on its first training batch
(rank 0 writes <run>/memory_report.json and the timeline). Returns no scores."""


def run(run):
    from lib.profiler import run_profile_mode

    run_profile_mode(run)
    return None, 0
