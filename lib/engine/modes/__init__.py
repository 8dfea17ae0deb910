"""One runner per `--mode`: `run(run: RunContext) -> (scores dict or None, iterations)`."""
