"""Apache Airflow provider for DexCare All Visits Reports."""

__version__ = "0.1.0"
