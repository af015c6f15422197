"""Front end: `python evaluation.py` grades CAS771 Task A and B; see README for more."""

from amalgam.cli.eval_cli import main

if __name__ == "__main__":
    main()
