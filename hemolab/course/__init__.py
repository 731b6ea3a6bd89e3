"""Authoring tooling for the course, apart from the runtime library: its map, generated cells, standards.

* :mod:`~hemolab.course.catalog` -- :data:`COURSE`, the single source of truth for the notebooks' order,
  titles, goals, run times per profile and dependencies; badges and launch links;
* :mod:`~hemolab.course.navigation` -- the generated navigation cells, the course index notebook and the
  README's course map (``hemolab course nav``);
* :mod:`~hemolab.course.standards` -- the checks every notebook must pass (``hemolab course check`` and
  the tests).

Nothing in the library (models, training, inference) imports this package.
"""

from hemolab.course import catalog, navigation, standards
from hemolab.course.catalog import *  # noqa: F403 - the package re-exports its modules' public names
from hemolab.course.navigation import *  # noqa: F403
from hemolab.course.standards import *  # noqa: F403

__all__ = [*catalog.__all__, *navigation.__all__, *standards.__all__]
