"""Learning curve of an LM checkpoint (train / valid BPC per epoch from its ``meta["history"]``).

python scripts/plot_learning_curve.py checkpoints/lm_ptb_528.pt --out results/lm_ptb_528/learning_curve.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crossbar.errors import CrossbarInputError  # noqa: E402
from crossbar.io import check_outputs, pyplot, save_figure  # noqa: E402
from rnn_models.checkpoint import load_checkpoint  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()
    try:
        check_outputs({"--out": (args.out, "file")}, {"checkpoint": args.checkpoint})
        ckpt = load_checkpoint(args.checkpoint, task="lm")
        history = ckpt["meta"].get("history") or []
        if not history:
            raise CrossbarInputError(f"{args.checkpoint}: no training history in its meta")
    except CrossbarInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plt = pyplot()

    phases = list(dict.fromkeys(h.get("phase", "float") for h in history))  # in training order
    fig, ax = plt.subplots(figsize=(6.5, 4))
    offset = 0  # each phase counts its steps from 0: plot them one after the other
    for phase, style in (("float", "-"), ("finetune", "-."), ("hwa", "--")):
        pts = [h for h in history if h.get("phase", "float") == phase]
        if not pts:
            continue
        x = [offset + h.get("steps", i + 1) for i, h in enumerate(pts)]
        offset = x[-1]
        ax.plot(x, [h["train_bpc"] for h in pts], style, color="tab:gray", label=f"{phase}: train (with dropout)")
        ax.plot(x, [h["valid_bpc"] for h in pts], style + "o", color="tab:blue", ms=3, label=f"{phase}: valid")
    best = min(h["valid_bpc"] for h in history)
    ax.axhline(best, color="tab:blue", lw=0.8, ls=":", label=f"best valid {best:.4f}")
    ax.axhline(1.42, color="tab:red", lw=0.8, ls=":", label="acceptance 1.42")
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("bits per character")
    ax.set_ylim(max(1.2, best - 0.1), min(3.0, max(h["valid_bpc"] for h in history) + 0.1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"{Path(args.checkpoint).name}: {ckpt['arch'].get('hidden_size')} hidden, "
        f"{sum(max(h.get('minutes', 0) for h in history if h.get('phase', 'float') == ph) for ph in phases):.0f} min "
        f"({' + '.join(phases)})"
    )
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
