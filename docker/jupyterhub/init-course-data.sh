#!/bin/bash
# Prepare the hub's shared course data; run as root in the course image by
# docker-compose.yml (service course-data) before the hub starts. Idempotent.
#
# The nbgrader exchange, following nbgrader's own permission scheme with the
# graders as a group (every container runs as jovyan, UID 1000, so Unix
# ownership cannot tell students apart; a group can tell graders apart):
#
#   exchange/                 root:root     1777  nbgrader requires 0777 here
#   exchange/$COURSE_ID/      root:graders  2775
#     outbound/               root:graders  2775  released assignments
#     inbound/                root:graders  2773  students may create, not list
#     feedback/               root:graders  2771  students read only by hash
#
# Students mount outbound/ and feedback/ read-only and inbound/ read-write
# (see jupyterhub_config.py); graders (the formgrader container and
# instructors' servers) join the graders group and see all of it.
#
# The course directory (gradebook, source, release, submitted, autograded,
# feedback) is seeded once from the repository's grading/, mounted at
# $COURSE_GRADING_SEED (default /opt/course/grading; docker-compose.yml
# mounts ../../grading there: the image itself carries no solutions), and
# belongs to jovyan:graders; students never mount it. COURSE_ROOT set but empty skips
# it (Kubernetes: the exchange volume only).
set -euo pipefail

exchange=${COURSE_EXCHANGE_ROOT:-/srv/nbgrader/exchange}
course_dir=${COURSE_ROOT-/srv/course}
course_id=${COURSE_ID:-course}
gid=${COURSE_HUB_GRADER_GID:-2000}
uid=${NB_UID:-1000}
seed=${COURSE_GRADING_SEED:-/opt/course/grading}

if [[ $(id -u) != 0 ]]; then
    echo "init-course-data: must run as root (user: \"0:0\" in docker-compose.yml)" >&2
    exit 2
fi
if [[ ! $course_id =~ ^[A-Za-z0-9_.-]+$ ]]; then
    echo "init-course-data: COURSE_ID='$course_id' must be letters, digits, '.', '_' or '-'" >&2
    exit 2
fi

install -d -o root -g root -m 1777 "$exchange"
install -d -o root -g "$gid" -m 2775 "$exchange/$course_id"
install -d -o root -g "$gid" -m 2775 "$exchange/$course_id/outbound"
install -d -o root -g "$gid" -m 2773 "$exchange/$course_id/inbound"
install -d -o root -g "$gid" -m 2771 "$exchange/$course_id/feedback"
# install -d leaves an existing directory's mode alone: set it every time.
chmod 1777 "$exchange"
chmod 2775 "$exchange/$course_id" "$exchange/$course_id/outbound"
chmod 2773 "$exchange/$course_id/inbound"
chmod 2771 "$exchange/$course_id/feedback"
chown root:"$gid" "$exchange/$course_id" "$exchange/$course_id"/{outbound,inbound,feedback}

if [[ -n $course_dir ]]; then
    install -d -o "$uid" -g "$gid" -m 2770 "$course_dir"
    if [[ ! -e $course_dir/nbgrader_config.py && ! -d $seed ]]; then
        echo "init-course-data: no course directory to seed from at $seed (mount the repository's grading/ there)" >&2
        exit 2
    fi
    if [[ ! -e $course_dir/nbgrader_config.py ]]; then
        echo "init-course-data: seeding $course_dir from $seed"
        cp -R "$seed/." "$course_dir/"
        chown -R "$uid:$gid" "$course_dir"
        chmod -R g+rwX "$course_dir"
    fi
    echo "init-course-data: course directory $course_dir ready"
fi
echo "init-course-data: exchange $exchange/$course_id ready (graders gid $gid)"
