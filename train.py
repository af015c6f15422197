"""Front end: `python train.py --task B --temperature 3 --alpha 0.5` (see README)."""

from amalgam.cli.train_cli import main

if __name__ == "__main__":
    main()
