"""The per-step expert-load statistic of a trained LM with its router bias frozen (docs/lm.md, "Aux-loss-free
balancing in SFT"): routes fresh training batches, no optimizer step and no bias update, and prints
max/mean load per batch, averaged and worst over the MoE layers.

    python examples/lm_load_frozen_bias.py runs/lm_tiny --batches 100 --batch-size 64
"""
import argparse

from tristream.lm.train import frozen_bias_load, load_lm, task_of


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="LM folder from `tristream sft --preset lm_tiny --out DIR`")
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64, help="problems per batch (lm_tiny trains with 64)")
    args = ap.parse_args(argv)
    model, meta = load_lm(args.checkpoint)
    t = frozen_bias_load(model, task_of(meta), batches=args.batches, batch_size=args.batch_size,
                         zero_digit_prob=meta["lm"].get("zero_digit_prob", 0.0))
    mean, worst = t.mean(1), t.max(1).values
    print(f"{args.checkpoint}: {args.batches} batches of {args.batch_size} problems, router bias frozen")
    print(f"max/mean load per batch: layer mean avg {mean.mean():.3f} max {mean.max():.3f}; "
          f"worst layer avg {worst.mean():.3f} max {worst.max():.3f}")
    print("per layer avg: " + ", ".join(f"{v:.3f}" for v in t.mean(0).tolist()))


if __name__ == "__main__":
    main()
