"""Students, teachers, checkpoints and model input.

Every module that registers a teacher architecture is imported here, so the registry
(`amalgam.models.registry`) is full whichever model module is imported first.
"""

from amalgam.models import cas771_format, teacher_archs  # noqa: F401  (they register their architectures)
