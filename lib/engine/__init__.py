"""Training engine: the loop (trainer) and its hooks (hookbase: registry and order; hooks: the
built-ins), one EventStorage for trainer state (storage), the model input (inputs), losses,
optimizers and schedules (optim), EMA, checkpoints, data order (data), process groups (dist),
inference, process setup (process) and the run modes (launch -> modes/train, modes/evaluate,
modes/profile). Knows no dataset or model by name; main.py wires them in."""
