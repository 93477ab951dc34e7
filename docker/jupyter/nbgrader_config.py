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

# The gradebook: nbgrader's default is gradebook.db (SQLite) in the course
# directory, fine for one grader. Where several servers write it (Kubernetes:
# the formgrader and every instructor's pod), SQLite risks "database is
# locked": a PostgreSQL URL comes from COURSE_GRADEBOOK_URL, or from the file
# named by COURSE_GRADEBOOK_URL_FILE (a mounted Secret, so that the password
# stays out of the environment listing).
gradebook_url = os.environ.get("COURSE_GRADEBOOK_URL", "")
url_file = os.environ.get("COURSE_GRADEBOOK_URL_FILE", "")
if not gradebook_url and url_file:
    with open(url_file, encoding="utf-8") as handle:
        gradebook_url = handle.read().strip()
if gradebook_url:
    c.CourseDirectory.db_url = gradebook_url
