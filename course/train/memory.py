"""Peak memory during training: moved to :mod:`course.memory`, re-exported here.

Lesson 02's pipelines measure memory too, and a lesson module may only use
what lies below it (lesson 02 never imports lesson 03's ``course.train``), so
the helpers live one level down in :mod:`course.memory`.  This module keeps
the old import path working: ``from course.train.memory import PeakMemory``.
"""

from course.memory import (
    MB,
    PeakMemory,
    fits_in_memory,
    high_water_mb,
    is_out_of_memory,
    release_free_memory,
    rss_mb,
)

__all__ = ["MB", "PeakMemory", "fits_in_memory", "high_water_mb", "is_out_of_memory", "release_free_memory", "rss_mb"]
