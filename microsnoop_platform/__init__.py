"""The platform application: the ``microsnoop`` platform commands and the platform demo.

The top layer: it may import the pipelines, components, services and the core; nothing imports it
(``tests/unit/test_layering.py`` checks every contract). Its commands join the core CLI through the
``microsnoop.cli`` entry point.
"""
