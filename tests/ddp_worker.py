"""A tiny MAE run started by test_ddp.py, alone or under torchrun (not collected by pytest)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_mae_config  # noqa: E402
from sslab import main  # noqa: E402

if __name__ == "__main__":
    main(tiny_mae_config(Path("."), max_steps=2, warmup_epochs=0, base_lr=0.02), sys.argv[1:])
