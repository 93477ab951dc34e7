"""``python -m course.doctor [--json]``: the doctor without the ``course`` command."""

import argparse
import sys

from course.doctor import main

parser = argparse.ArgumentParser(prog="python -m course.doctor", description="Check this machine for the course.")
parser.add_argument("--json", action="store_true", help="print facts and findings as JSON")
sys.exit(main(as_json=parser.parse_args().json))
