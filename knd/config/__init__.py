"""Typed, frozen configuration: schemas in :mod:`knd.config.schema`, values in
``configs/*.yaml``, overrides as key=value (:mod:`knd.config.loading`).

Every command has one schema (a frozen dataclass) and one YAML file of defaults,
``configs/<command>.yaml``. The YAML is the single source of default values; the dataclasses
carry the types and the help text. Values are layered, later wins:

1. ``configs/<command>.yaml``
2. ``configs/recipes/<recipe>.yaml`` for ``train`` (the recipe sets model and schedule)
3. ``config=FILE.yaml`` (e.g. the ``best_config.yaml`` written by ``knd analyse``)
4. ``key=value`` overrides from the command line (nested keys with dots, lists as ``[a,b]``)

An unknown key at any layer is an error that names the key.
"""
