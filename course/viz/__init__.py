"""Pictures of attention: matplotlib figures and an offline ipywidgets explorer.

Three views of the :class:`~course.attention.AttentionMaps` that
:func:`course.attention.extract` returns:

* :func:`plot_head`: one head as a ``seq x seq`` heatmap (rows = queries,
  columns = the keys they attend to);
* :func:`plot_model_view`: every layer x head at once, as a grid of small
  heatmaps, to spot the heads worth a closer look;
* :func:`plot_head_view`: lines from each token (left) to the tokens it
  attends to (right), darker = more attention.

:class:`AttentionExplorer` puts them behind a text box, layer/head sliders, a
view switch and a token picker.  It draws with matplotlib's Agg backend into
a PNG shown by an ``ipywidgets.Image``: no JavaScript of its own, no CDN, no
front-end extension, so it works offline in JupyterLab 4.  It also leaves a
plain image in the notebook, so papermill output and HTML exports show it.

Nothing here imports matplotlib or ipywidgets until a figure is drawn.
"""

from course.viz.explorer import AttentionExplorer, explore
from course.viz.figures import plot_head, plot_head_view, plot_model_view

__all__ = ["AttentionExplorer", "explore", "plot_head", "plot_head_view", "plot_model_view"]
