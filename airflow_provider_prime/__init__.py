"""Apache Airflow provider for Prime Intellect's GPU cloud.

Kept import-light on purpose: Airflow imports provider packages while it discovers them.
"""

__version__ = "0.1.0"
