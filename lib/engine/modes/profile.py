"""`--mode profile`: lib/profiler's memory profile of the model on the first training batch (the
JSON lands in the run folder). Returns no scores."""
from lib.engine.checkpoint import load_checkpoint, model_state
from lib.engine.data import make_loader
from lib.engine.inputs import for_model


def run(run):
    from lib.profiler import profile_memory

    cfg = run.cfg
    dataset = run.build_dataset(cfg.data, "train")
    model = run.build_model(cfg.model, dataset.meta.in_channels, dataset.meta.num_classes).to(run.device)
    if run.weights:
        model.load_state_dict(model_state(load_checkpoint(run.weights)))
    loader = make_loader(dataset, cfg.data.batch_size, 0, run.collate_fn, shuffle=True, seed=cfg.seed)
    profile_memory(model, next(iter(loader)), run.device, run.run_dir, cfg.profile, for_model(run.make_input, model))
    return None, 0
