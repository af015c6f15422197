"""amalgam as a library: the engine `train.py` and `evaluation.py` drive, fed from Python.

    import amalgam
    teachers = [amalgam.Teacher(net, classes=["cat", "dog"]), ...]
    result = amalgam.distil(teachers, classes=[...], train=train_ds, val=val_ds, epochs=5)
    amalgam.evaluate(result, test_ds, classes=[...])

See docs/api.md. Every mistake a user can fix raises `amalgam.UserError` with the CLI's message.
"""

from amalgam.api.run import DistilResult, distil
from amalgam.api.scoring import evaluate
from amalgam.api.teachers import Teacher
from amalgam.errors import UserError

__all__ = ["DistilResult", "Teacher", "UserError", "distil", "evaluate"]
