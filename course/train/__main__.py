"""``python -m course.train`` (also under torchrun and accelerate launch): see :mod:`course.train.script`."""

import sys

from course.train.script import main

sys.exit(main())
