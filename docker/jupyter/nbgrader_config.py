"""Site-wide nbgrader settings of the course image (/etc/jupyter/nbgrader_config.py).

The lowest-priority nbgrader config: the course directory's own
nbgrader_config.py (grading/ in the repository) overrides it. Values come
from the container's environment, which JupyterHub or docker compose set.
"""

import os

c = get_config()  # noqa: F821 - provided by the config loader

c.CourseDirectory.course_id = os.environ.get("COURSE_ID", "course")
c.Exchange.root = os.environ.get("COURSE_EXCHANGE_ROOT", "/srv/nbgrader/exchange")

# Every container runs as the same Unix user (jovyan, UID 1000); nbgrader takes
# the student's name from $JUPYTERHUB_USER. Owner checks on submissions would
# only ever see "jovyan", so they are off.
c.ExchangeCollect.check_owner = False

course_root = os.environ.get("COURSE_ROOT")
if course_root:
    # Instructors and the formgrader share the course directory through the
    # graders' group, and do not own the exchange directories (root does).
    c.CourseDirectory.root = course_root
    c.CourseDirectory.groupshared = True
