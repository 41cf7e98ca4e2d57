"""Seeded data generators. Every function takes the generator it draws from; none touches global RNG.

Public names:

- :class:`TeacherPair`, :func:`teacher_pair` -- unit source/target teachers at angle theta
- :func:`linear_regression_data` -- Gaussian inputs and noisy linear labels, (instances, n, d)
- :func:`standard_normal`, :data:`RandomSource` -- float64 normal draws from a torch or numpy generator
"""

from transferlab.tasks._random import RandomSource, standard_normal
from transferlab.tasks.linear import TeacherPair, linear_regression_data, teacher_pair

__all__ = [
    "RandomSource",
    "TeacherPair",
    "linear_regression_data",
    "standard_normal",
    "teacher_pair",
]
