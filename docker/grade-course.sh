#!/bin/bash
# `course grade` inside an instructor's container, as root, with the sandbox:
#
#   docker exec -u 0 course-prof /opt/course/bin/grade-course.sh ps0_environment [course grade options]
#
# The sandbox needs root (its own namespaces, mounts and a uid per worker)
# and the container the capabilities listed in jupyterhub_config.py
# (GRADER_HOST_CONFIG). Root would leave autograded/, feedback/, results/
# and the gradebook's journal owned by root, which the instructor's server
# (jovyan) and the formgrader could then not update: afterwards, whether
# grading passed or not, the course directory goes back to the owner and
# group of its top folder. The exit status is course grade's.
set -euo pipefail

course_dir=${COURSE_ROOT:-/srv/course}
if [[ $(id -u) != 0 ]]; then
    echo "grade-course: run as root: docker exec -u 0 <container> $0 ASSIGNMENT" >&2
    exit 2
fi
owner=$(stat -c %u:%g "$course_dir")
status=0
course grade --course-dir "$course_dir" "$@" || status=$?
chown -R "$owner" "$course_dir"
chmod -R g+rwX "$course_dir"
exit "$status"
