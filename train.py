"""Front end: `python train.py --task B --temperature 3 --alpha 0.5` (see README)."""

if __name__ == "__main__":
    try:
        from amalgam.cli.entry import train
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    train()
