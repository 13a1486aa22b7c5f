"""A tiny MAE run as its own process, for tests that kill it, fill its disk or resume it (not collected).

    python tests/tiny_run.py --output-dir D --data FOLDER [any Config flag]

A user's mistake (:class:`sslab.errors.SslabError`) is printed as ``sslab: error: <message>`` with
exit status 2 and no traceback, as the entry points do, so a test can count the lines a run prints.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_mae_config  # noqa: E402
from sslab import main  # noqa: E402
from sslab.errors import SslabError  # noqa: E402

BASE = tiny_mae_config(Path("."), img_size=16, in_chans=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                       batch_size=4, epochs=3, warmup_epochs=1, log_every=1, save_every_steps=4, keep_last=2,
                       model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 4})

if __name__ == "__main__":
    try:
        main(BASE, sys.argv[1:])
    except SslabError as e:
        print(f"sslab: error: {e}", file=sys.stderr)
        sys.exit(2)
