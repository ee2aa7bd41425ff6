"""What the tests share: real servers on loopback, the airflow command, a task runtime, the warehouses read
through their own drivers. Fixtures are in tests/conftest.py."""
