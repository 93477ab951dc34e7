"""course: the helper library behind the PyTorch + Transformers on GPUs lessons.

Import what a lesson needs from its module, for example::

    from course.assets import load_model, load_tokenizer, load_dataset
    from course.devices import choose_device
    from course.metrics import record

``import course`` itself is instant: heavy libraries (torch, transformers,
papermill, nbgrader) are imported inside the functions that use them.
"""

__version__ = "0.1.0"
