"""The ``sslab`` command: one entry point for the tools, beside their ``python -m`` forms.

    sslab train experiments/mae_demo.py --epochs 2      # = python experiments/mae_demo.py --epochs 2
    sslab knn runs/mae_demo --data demo                 # = python -m sslab.eval.knn ...
    sslab linear-probe | finetune | export | visualize | sweep | summarize | official-dino ...
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

# command -> (module whose main(argv) runs it, what it does)
COMMANDS = {
    "knn": ("sslab.eval.knn", "k-NN evaluation of a run, checkpoint, export or official file"),
    "linear-probe": ("sslab.eval.linear_probe", "linear probe (cached features, or the paper's augmented one)"),
    "finetune": ("sslab.eval.finetune", "end-to-end fine-tuning with layer-wise lr decay"),
    "export": ("sslab.export", "export the encoder of a checkpoint for timm"),
    "visualize": ("sslab.visualize", "MAE reconstructions / attention maps as PNG"),
    "sweep": ("sslab.eval.sweep", "run a scaling sweep file (python -m sslab.eval.sweep)"),
    "summarize": ("sslab.summarize", "compare run folders: CSV + plot of differing settings vs results"),
    "official-dino": ("sslab.official_dino", "continue from an official DINO checkpoint"),
}


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: sslab COMMAND [ARGS...]   (sslab COMMAND --help for its options)", "",
             f"  {'train'.ljust(width)}run a recipe: sslab train experiments/mae_demo.py [--FIELD VALUE ...]"]
    lines += [f"  {name.ljust(width)}{what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def train_recipe(argv: list[str]) -> None:
    """Run a recipe file as ``python RECIPE.py ARGS`` would (its ``if __name__ == "__main__"`` part)."""
    if not argv or argv[0].startswith("-"):
        sys.exit("usage: sslab train RECIPE.py [--FIELD VALUE ...]   (recipes are in experiments/)")
    recipe = Path(argv[0])
    if not recipe.is_file():
        sys.exit(f"sslab: error: recipe {recipe} does not exist; give a file such as experiments/mae_demo.py")
    sys.argv = [str(recipe), *argv[1:]]
    sys.path.insert(0, str(recipe.resolve().parent))  # as python RECIPE.py: the recipe's folder is importable
    runpy.run_path(str(recipe), run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``sslab COMMAND ARGS``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        train_recipe(rest)
        return
    command = command.replace("_", "-").replace("summarise", "summarize").replace("visualise", "visualize")
    if command == "eval" and rest:  # sslab eval knn ... reads naturally too
        command, rest = rest[0].replace("_", "-"), rest[1:]
    if command not in COMMANDS:
        sys.exit(f"sslab: error: unknown command {argv[0]!r}; one of: train, {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"sslab {command}", *rest]
    module.main(rest)


if __name__ == "__main__":
    main()
