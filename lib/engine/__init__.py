"""Training engine: the loop and its hooks (trainer, hooks), losses, optimizers and schedules
(optim), EMA, checkpoints, data order (data), process groups (dist), inference, and the run modes
(launch -> train_mode / test_mode). Knows no dataset or model by name; main.py wires them in."""
