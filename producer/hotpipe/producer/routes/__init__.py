"""The API's routes, one module per noun: jobs, uploads, queues, workers, health.

Each module has an ``add_*_routes(app, ...)`` that registers its routes on the app with what
they talk to; ``api.create_app`` calls them in order.  Route function names are the OpenAPI
operation ids: keep them.
"""
