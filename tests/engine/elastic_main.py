"""main.py plus one test-only hook, `kill_at`, for tests/engine/test_elastic.py (run under torchrun):

    torchrun ... tests/engine/elastic_main.py --config X --output-dir D --resume auto "train.hooks=[..., kill_at]"

After every step the hook appends {"rank", "attempt", "iteration", "loss"} as a JSON line to
$VOXSEG_TEST_LOSSES; with $VOXSEG_TEST_KILL="RANK:ITERATION" that rank SIGKILLs itself after that
iteration's hooks (list kill_at last, after checkpoint), in the first attempt only
($TORCHELASTIC_RESTART_COUNT 0): a worker lost mid-training, which torchrun's --max-restarts replaces.
"""
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from lib.engine.hookbase import HookBase, register_hook  # noqa: E402


@register_hook
class KillAtHook(HookBase):
    name = "kill_at"
    reads = ("step_info",)

    @classmethod
    def build(cls, env):
        return cls()

    def after_step(self, trainer):
        rank = int(os.environ.get("RANK", 0))
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
        record = {"rank": rank, "attempt": attempt, "iteration": trainer.iteration,
                  "loss": trainer.storage.get("step_info")["loss"]}
        with open(os.environ["VOXSEG_TEST_LOSSES"], "a") as f:
            f.write(json.dumps(record) + "\n")
        kill = os.environ.get("VOXSEG_TEST_KILL", "")
        if kill and attempt == 0 and [rank, trainer.iteration] == [int(v) for v in kill.split(":")]:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    import main

    sys.exit(main.main())
