"""What several test modules share, one place per job; no test module imports another.

- `front_ends`: run `train.py` / `evaluation.py` (a subprocess, or in-process for error
  messages), the one-line-error check, the tiny task's flags.
- `file_server`: a 127.0.0.1 file server and asset/manifest/zip builders (no test touches the
  internet).
- `tiny_teachers`: a 4-class task with untrained CompactCNN teachers at 16x16, and the
  tolerance checks for teacher targets.
- `task_files`: folder, .pth and CAS771 task files written into a tmp folder.
- `small_models`: tiny students and rosters for loss and method tests.
- `homes`: copies of the session's trained teachers into a home a test may write.

Fixtures live in tests/conftest.py (the trained teachers of the tiny task, the file server).
"""
