"""Front end: `python evaluation.py` grades CAS771 Task A and B; see README for more."""

if __name__ == "__main__":
    try:
        from amalgam.cli.entry import evaluate
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    evaluate()
