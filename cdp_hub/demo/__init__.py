"""The demo: the whole pipeline on generated multi-source customers, on the embedded default.

``data`` generates the customers (five systems, Russian names, phones in every format); ``run`` drives them
through connectors, resolver, triggers and delivery and prints a summary (``cdp-hub demo``).
"""

from cdp_hub.demo.run import demo_settings, print_summary, run_demo

__all__ = ["demo_settings", "print_summary", "run_demo"]
