"""The web pages: an overview of the cluster's models at ``/ui/`` and a playground and monitoring
page per model at ``/ui/{name}``.

The control application serves them (``lambdaml.control.app``), so opening a page never wakes
a model's replicas: the pages read the catalog, the records and the replicas' presence reports
through ``/ui/api/...`` (``routes``) and ``/v1``, and run a prediction through ``/v1`` like any
client. The page is plain HTML, CSS and JavaScript in ``static/``, shipped in the package: no
build step, no CDN, no front-end library (the charts are a few lines of SVG).
"""

from lambdaml.ui.routes import UiRoutes

__all__ = ["UiRoutes"]
