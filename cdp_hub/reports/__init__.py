"""Business reports over the warehouse: attribution of conversions and revenue to scenarios, campaigns and
their experiment variants (``scenarios.py``), the statistics of uplift (``stats.py``), the static HTML report
with charts (``html.py``) and the ``cdp-hub report`` command (``cli.py``)."""
